//! `ledger`: the conservation-of-money check. The grader knows what every balance must be: it
//! chose the opening balances and it saw which transfers the service accepted. So after a burst
//! of concurrent transfers it needs no heuristics: each balance, read through the API and read
//! from the service's own table, must equal its opening balance plus the accepted transfers, to
//! the cent. Lost updates (read-modify-write), overdrafts that slipped through (check, then
//! debit) and half-applied transfers all show up as a balance that is off.
//!
//! The burst uses the same machinery as `concurrent` (connections opened and warmed first, all
//! requests released at a barrier); statement reads run alongside it until it ends, so a
//! statement read in two snapshots is caught adding up wrong. The seed replays the accounts,
//! amounts and directions, never the interleaving.

use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::future::join_all;
use rand::Rng;
use serde_json::Value;
use tokio::sync::Barrier;

use super::params::{Ledger, Statement};
use crate::engine::assert::{describe_json, shorten};
use crate::engine::http::{OutgoingRequest, Response, Sent};
use crate::engine::step::build_request;
use crate::engine::wire::Held;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::probes::upstream_calls::run::judge;

/// Statement reads shown as exchanges: the first, and the first that did not add up.
const SHOWN_READS: usize = 2;

/// One account the probe opened.
struct Account {
    id: Value,
    opening: i64,
}

/// One planned transfer, by account index.
#[derive(Clone, Copy)]
struct Planned {
    from: usize,
    to: usize,
    amount: i64,
}

pub async fn run(p: &Ledger, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let accounts = open_accounts(p, ctx).await?;
    let plan = plan_transfers(p, ctx);
    let transfer_requests: Vec<OutgoingRequest> = plan
        .iter()
        .map(|t| {
            ctx.scope.insert("from".into(), accounts[t.from].id.clone());
            ctx.scope.insert("to".into(), accounts[t.to].id.clone());
            ctx.scope.insert("amount".into(), Value::from(t.amount));
            build_request(ctx, &p.transfer.spec)
        })
        .collect::<Result<_, _>>()?;
    let statement_requests: Vec<OutgoingRequest> = match &p.statement {
        Some(s) => accounts
            .iter()
            .map(|a| {
                ctx.scope.insert("account".into(), a.id.clone());
                build_request(ctx, &s.request.spec)
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };

    let (sent, warm, reads) = burst(p, ctx, transfer_requests, &statement_requests).await?;
    let outcome = judge_transfers(p, ctx, &plan, &sent)?;

    // Every statement read during the burst must add up.
    let mut statements_read = 0;
    if let Some(s) = &p.statement {
        for (i, read) in reads.iter().enumerate() {
            if i < SHOWN_READS - 1 {
                ctx.exchanges.push(read.exchange.clone());
            }
            let resp = received(&s.request.name, read)?;
            if let Err(f) = statement_adds_up(s, &resp, None) {
                ctx.exchanges.push(read.exchange.clone());
                return Err(during_burst(f));
            }
            statements_read += 1;
        }
    }

    let expected = expected_balances(&accounts, &plan, &outcome.applied);
    let books = Books {
        noun: &p.noun,
        accounts: &accounts,
        plan: &plan,
        outcome: &outcome,
    };
    if let Some(i) = expected.iter().position(|&b| b < 0) {
        return Err(books.overdrawn(i, expected[i]));
    }
    for (i, account) in accounts.iter().enumerate() {
        let got = api_balance(p, ctx, account).await?;
        if got != expected[i] {
            return Err(books.off_balance("your API says", i, got, expected[i]));
        }
    }
    let mut in_database = "";
    if let Some(sql) = &p.balance_sql {
        let client = crate::engine::sql::connect_service_db(ctx, false).await?;
        for (i, account) in accounts.iter().enumerate() {
            let id = crate::spec::template::text_of(&account.id);
            let row = crate::engine::sql::query_row(
                &client,
                "read the balance in your database",
                sql,
                std::slice::from_ref(&id),
            )
            .await?;
            let got = row.values().next().and_then(Value::as_i64);
            let Some(got) = got else {
                return Err(Failure::Error(format!(
                    "`balance_sql` gave {} for account {id}, not one integer column",
                    describe_json(&Value::Object(row))
                )));
            };
            if got != expected[i] {
                return Err(books.off_balance("your database holds", i, got, expected[i]));
            }
        }
        in_database = " and in your database";
    }
    if let Some(s) = &p.statement {
        for (i, account) in accounts.iter().enumerate() {
            let (resp, _) = read_account(ctx, &s.request, p, account).await?;
            let (_, _, entries) = books.tally(i);
            statement_adds_up(s, &resp, Some((expected[i], entries)))?;
        }
    }

    let refused = sent.len() - outcome.applied.len();
    ctx.measured(format!(
        "{} transfers among {} {}s released together on {} connections warmed first: {} accepted, {refused} refused; every balance equals its opening balance plus the accepted transfers, through your API{in_database}",
        plan.len(),
        accounts.len(),
        p.noun,
        warm,
        outcome.applied.len(),
    ));
    if p.statement.is_some() {
        ctx.measured(format!(
            "{statements_read} statements read while the transfers ran, and one per {} after: every one added up",
            p.noun
        ));
    }
    Ok(())
}

async fn open_accounts(p: &Ledger, ctx: &mut CheckContext<'_>) -> Result<Vec<Account>, Failure> {
    let mut accounts = Vec::with_capacity(p.accounts);
    for n in 1..=p.accounts {
        let opening = ctx.rng.gen_range(p.opening_balance.0..=p.opening_balance.1);
        ctx.scope.insert("n".into(), Value::from(n));
        ctx.scope.insert("balance".into(), Value::from(opening));
        let req = build_request(ctx, &p.open.spec)?;
        let summary = format!("{} {}", req.method, req.url.path());
        let resp = ctx.send(&p.open.name, req).await?;
        if let Some(info) = judge(ctx, &p.open, &summary, &resp, &[], &p.account_id)? {
            return Err(Failure::Fail(info));
        }
        let id = crate::probes::upstream_calls::run::identity_of(&resp, &p.account_id);
        let Some(id) = id.filter(|v| v.is_string() || v.is_number()) else {
            return Err(Failure::Fail(FailInfo {
                message: format!(
                    "{} ({summary}): the response has no account id at {}",
                    p.open.name, p.account_id.text
                ),
                expected: format!("the new account's id at {}", p.account_id.text),
                actual: shorten(&resp.text(), 200),
                ..Default::default()
            }));
        };
        accounts.push(Account { id, opening });
    }
    Ok(accounts)
}

fn plan_transfers(p: &Ledger, ctx: &mut CheckContext<'_>) -> Vec<Planned> {
    (0..p.transfers)
        .map(|i| {
            let (from, to) = if p.opposite_pairs {
                if i % 2 == 0 {
                    (0, 1)
                } else {
                    (1, 0)
                }
            } else {
                let from = ctx.rng.gen_range(0..p.accounts);
                let to = (from + ctx.rng.gen_range(1..p.accounts)) % p.accounts;
                (from, to)
            };
            let amount = ctx.rng.gen_range(p.amount.0..=p.amount.1);
            Planned { from, to, amount }
        })
        .collect()
}

/// Opens and warms one connection per transfer, then releases every transfer at once, while
/// statement reads run one after another on fresh connections until the transfers are done.
async fn burst(
    p: &Ledger,
    ctx: &mut CheckContext<'_>,
    transfers: Vec<OutgoingRequest>,
    statements: &[OutgoingRequest],
) -> Result<(Vec<Sent>, usize, Vec<Sent>), Failure> {
    let base = ctx.service.base_url.clone();
    let timeout = ctx.http.timeout();
    let warm_path = ctx.service.health_path.clone();
    let opened =
        join_all((0..transfers.len()).map(|_| Held::open(&base, &warm_path, timeout))).await;
    let mut held = Vec::with_capacity(opened.len());
    for h in opened {
        match h {
            Ok(h) => held.push(h),
            Err(e) => {
                return Err(Failure::Fail(FailInfo {
                    message: format!(
                        "could not open {} connections to the service before the burst: {e}",
                        transfers.len()
                    ),
                    expected: format!("{} connections accepted at once", transfers.len()),
                    actual: e,
                    ..Default::default()
                }))
            }
        }
    }
    let warm = held.iter().filter(|h| h.warm).count();
    let reader = usize::from(!statements.is_empty());
    let barrier = Barrier::new(held.len() + reader);
    let barrier = &barrier;
    let done = AtomicBool::new(false);
    let done = &done;
    let name = &p.transfer.name;
    let transfers_fut = async {
        let sent = join_all(transfers.into_iter().zip(held).enumerate().map(
            |(i, (req, h))| async move {
                barrier.wait().await;
                h.send(&format!("{name} #{}", i + 1), req, timeout).await
            },
        ))
        .await;
        done.store(true, Ordering::SeqCst);
        sent
    };
    let http = ctx.http;
    let reads_fut = async {
        let mut reads = Vec::new();
        let Some(s) = &p.statement else { return reads };
        barrier.wait().await;
        for k in 0..s.reads {
            if done.load(Ordering::SeqCst) {
                break;
            }
            let req = statements[k % statements.len()].clone();
            reads.push(http.send(&s.request.name, req).await);
        }
        reads
    };
    let (sent, reads) = tokio::join!(transfers_fut, reads_fut);
    Ok((sent, warm, reads))
}

/// What the burst's answers say: which transfers were applied.
struct Outcome {
    applied: Vec<usize>,
}

fn judge_transfers(
    p: &Ledger,
    ctx: &mut CheckContext<'_>,
    plan: &[Planned],
    sent: &[Sent],
) -> Result<Outcome, Failure> {
    let noun = &p.noun;
    let mut applied = Vec::new();
    let mut shown: Vec<u16> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut gave_up = 0;
    for (i, s) in sent.iter().enumerate() {
        let status = s.response.as_ref().map(|r| r.status).unwrap_or(0);
        if !shown.contains(&status) && shown.len() < 4 {
            shown.push(status);
            ctx.exchanges.push(s.exchange.clone());
        }
        let t = plan[i];
        let what = format!(
            "transfer #{} ({noun} {} → {noun} {}, {} cents)",
            i + 1,
            t.from + 1,
            t.to + 1,
            t.amount
        );
        match &s.response {
            Err(e) => problems.push(format!("{what}: no response: {e}")),
            Ok(r) if p.accepted.accepts(r.status) => applied.push(i),
            Ok(r) if p.refused.as_ref().is_some_and(|f| f.accepts(r.status)) => {}
            Ok(r) if p.unavailable.as_ref().is_some_and(|u| u.accepts(r.status)) => gave_up += 1,
            Ok(r) => problems.push(format!(
                "{what} answered {}: {}",
                r.status,
                shorten(&r.text(), 160)
            )),
        }
    }
    if !problems.is_empty() {
        let server_errors = problems
            .iter()
            .filter(|p| p.contains(" answered 5"))
            .count();
        let why = if p.all_accepted {
            "the accounts held enough money for every transfer in any order, so each had to succeed; a 5xx or a refusal here is usually a deadlock (40P01) or serialization failure (40001) that reached the client instead of being retried"
        } else if server_errors > 0 {
            "a transfer answers that it was applied or refused, never a 5xx: a deadlock or serialization failure must be retried, not passed on"
        } else {
            "every transfer must be applied or refused as the README says"
        };
        let accepted = p.accepted.describe();
        let expected = match &p.refused {
            Some(r) => format!("{accepted} (applied) or {} (refused)", r.describe()),
            None => format!("{accepted} for every transfer"),
        };
        return Err(Failure::Fail(FailInfo {
            message: format!(
                "{} of {} concurrent transfers were not answered as applied or refused: {}",
                problems.len(),
                sent.len(),
                problems[0]
            ),
            expected,
            actual: format!("{} ({why})", problems.len()),
            evidence: problems.into_iter().take(10).collect(),
            ..Default::default()
        }));
    }
    if gave_up > 0 {
        let statuses = p
            .unavailable
            .as_ref()
            .map(crate::spec::StatusSpec::describe)
            .unwrap_or_default();
        if gave_up * 2 > sent.len() {
            return Err(Failure::Error(format!(
                "{gave_up} of {} concurrent transfers answered {statuses} (an upstream unavailable, as the README allows when it does not answer in time): the grader's mock could not keep up with this burst on this machine, so the balances were not judged; run the check again",
                sent.len()
            )));
        }
        ctx.measured(format!(
            "{gave_up} of {} transfers answered {statuses} (an upstream unavailable) and are judged as not applied",
            sent.len()
        ));
    }
    Ok(Outcome { applied })
}

fn expected_balances(accounts: &[Account], plan: &[Planned], applied: &[usize]) -> Vec<i64> {
    let mut balances: Vec<i64> = accounts.iter().map(|a| a.opening).collect();
    for &i in applied {
        balances[plan[i].from] -= plan[i].amount;
        balances[plan[i].to] += plan[i].amount;
    }
    balances
}

/// An integer in a response: a JSON integer (money is never a float or a string here).
fn integer_at(resp: &Response, path: &crate::spec::JsonQuery) -> Result<i64, String> {
    let doc: Value = serde_json::from_slice(&resp.body)
        .map_err(|_| format!("a JSON body, with an integer at {}", path.text))?;
    let found: Vec<&Value> = path.path.query(&doc).all();
    match found.as_slice() {
        [v] => v
            .as_i64()
            .ok_or_else(|| format!("{} is {}, not an integer", path.text, describe_json(v))),
        [] => Err(format!("no {} in the body", path.text)),
        _ => Err(format!("{} selects {} values", path.text, found.len())),
    }
}

/// Sends a read of one account (`{{account}}` is its id) and judges it as the request expects;
/// returns the response and the request's summary (`GET /wallets/…`).
async fn read_account(
    ctx: &mut CheckContext<'_>,
    request: &crate::probes::request::ProbeRequest,
    p: &Ledger,
    account: &Account,
) -> Result<(Response, String), Failure> {
    ctx.scope.insert("account".into(), account.id.clone());
    let req = build_request(ctx, &request.spec)?;
    let summary = format!("{} {}", req.method, req.url.path());
    let resp = ctx.send(&request.name, req).await?;
    match judge(ctx, request, &summary, &resp, &[], &p.account_id)? {
        Some(info) => Err(Failure::Fail(info)),
        None => Ok((resp, summary)),
    }
}

async fn api_balance(
    p: &Ledger,
    ctx: &mut CheckContext<'_>,
    account: &Account,
) -> Result<i64, Failure> {
    let (resp, summary) = read_account(ctx, &p.balance, p, account).await?;
    integer_at(&resp, &p.balance_path).map_err(|e| {
        Failure::Fail(FailInfo {
            message: format!("{} ({summary}): {e}", p.balance.name),
            expected: format!(
                "the balance, an integer number of cents, at {}",
                p.balance_path.text
            ),
            actual: shorten(&resp.text(), 200),
            ..Default::default()
        })
    })
}

/// What the burst did, for the messages that explain a wrong balance.
struct Books<'a> {
    noun: &'a str,
    accounts: &'a [Account],
    plan: &'a [Planned],
    outcome: &'a Outcome,
}

impl Books<'_> {
    /// What the accepted transfers took out of and put into account `i`, and how many touched it.
    fn tally(&self, i: usize) -> (i64, i64, usize) {
        let (mut out, mut into, mut n) = (0i64, 0i64, 0usize);
        for &t in &self.outcome.applied {
            if self.plan[t].from == i {
                out += self.plan[t].amount;
                n += 1;
            } else if self.plan[t].to == i {
                into += self.plan[t].amount;
                n += 1;
            }
        }
        (out, into, n)
    }

    fn which(&self, i: usize) -> Vec<String> {
        vec![format!(
            "{} {} is {}",
            self.noun,
            i + 1,
            describe_json(&self.accounts[i].id)
        )]
    }

    /// A balance (as `source` shows it) that is not what the accepted transfers make.
    fn off_balance(&self, source: &str, i: usize, got: i64, expected: i64) -> Failure {
        let (out, into, n) = self.tally(i);
        let cause = if got < 0 {
            "a balance below 0: concurrent transfers overdrew the account (a balance checked, then debited, without a lock or a conditional UPDATE)"
        } else {
            "money appeared or vanished: concurrent updates were lost (a balance read, computed in code and written back) or a transfer was applied only in part"
        };
        Failure::Fail(FailInfo {
            message: format!(
                "{} {} of {}: {source} balance {got}, but its opening balance {} plus the {n} transfers you accepted (−{out} + {into}) make {expected}",
                self.noun,
                i + 1,
                self.accounts.len(),
                self.accounts[i].opening
            ),
            expected: format!("balance {expected}"),
            actual: format!("balance {got}: {cause}"),
            evidence: self.which(i),
            ..Default::default()
        })
    }

    /// The transfers the service accepted spend more than an account ever held: whatever the
    /// order, its balance went below 0 on the way.
    fn overdrawn(&self, i: usize, ends_at: i64) -> Failure {
        let (out, into, n) = self.tally(i);
        Failure::Fail(FailInfo {
            message: format!(
                "{} {} of {}: the {n} transfers you accepted (−{out} + {into}) take its opening balance {} to {ends_at}: concurrent transfers overdrew it",
                self.noun,
                i + 1,
                self.accounts.len(),
                self.accounts[i].opening
            ),
            expected: "no accepted transfer takes a balance below 0".into(),
            actual: format!(
                "a balance of {ends_at}: the funds were checked before the debit, without a lock or a conditional UPDATE, so concurrent transfers spent the same money"
            ),
            evidence: self.which(i),
            ..Default::default()
        })
    }
}

/// Checks one statement: `balance == opening + Σ entries`; after the burst also the balance the
/// accepted transfers make and one entry per transfer of the account.
fn statement_adds_up(
    s: &Statement,
    resp: &Response,
    after: Option<(i64, usize)>,
) -> Result<(), Failure> {
    let fail = |message: String, expected: String| {
        Failure::Fail(FailInfo {
            message,
            expected,
            actual: shorten(&resp.text(), 300),
            ..Default::default()
        })
    };
    if resp.status != 200 {
        return Err(fail(
            format!("{} answered {}", s.request.name, resp.status),
            "200 with the statement".into(),
        ));
    }
    let balance = integer_at(resp, &s.balance).map_err(|e| {
        fail(
            format!("{}: {e}", s.request.name),
            "an integer balance".into(),
        )
    })?;
    let opening = integer_at(resp, &s.opening).map_err(|e| {
        fail(
            format!("{}: {e}", s.request.name),
            "an integer opening balance".into(),
        )
    })?;
    let doc: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    let entries: Vec<&Value> = s.entries.path.query(&doc).all();
    let mut sum = 0i64;
    for e in &entries {
        let Some(v) = e.as_i64() else {
            return Err(fail(
                format!(
                    "{}: an entry's amount is {}, not an integer",
                    s.request.name,
                    describe_json(e)
                ),
                format!("integers at {}", s.entries.text),
            ));
        };
        sum += v;
    }
    if balance != opening + sum {
        return Err(fail(
            format!(
                "{}: the statement does not add up: balance {balance}, but opening balance {opening} plus its {} entries ({sum:+}) make {}",
                s.request.name,
                entries.len(),
                opening + sum
            ),
            "balance = opening balance + the sum of the entries, read in one snapshot".into(),
        ));
    }
    if let Some((expected, count)) = after {
        if entries.len() != count || balance != expected {
            return Err(fail(
                format!(
                    "{}: after the transfers the statement shows balance {balance} with {} entries, but the {count} transfers you accepted for this account make {expected}",
                    s.request.name,
                    entries.len()
                ),
                format!("balance {expected}, {count} entries"),
            ));
        }
    }
    Ok(())
}

fn received(name: &str, s: &Sent) -> Result<Response, Failure> {
    s.response.clone().map_err(|e| {
        during_burst(Failure::Fail(FailInfo {
            message: format!("{name}: no response: {e}"),
            expected: "the statement".into(),
            actual: e.clone(),
            ..Default::default()
        }))
    })
}

fn during_burst(f: Failure) -> Failure {
    match f {
        Failure::Fail(mut info) => {
            info.message = format!("while transfers were running, {}", info.message);
            Failure::Fail(info)
        }
        other => other,
    }
}
