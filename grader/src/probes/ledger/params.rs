//! `ledger` parameters: how accounts are opened and read, what a transfer looks like, and how
//! large the burst is.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::{de, query, request, ProbeRequest};
use crate::spec::{JsonQuery, StatusSpec};

/// Variables the probe sets for its own requests: `{{n}}` and `{{balance}}` (opening an
/// account), `{{from}}`, `{{to}}`, `{{amount}}` (a transfer), `{{account}}` (reads).
pub const PROBE_VARS: &[&str] = &["n", "balance", "from", "to", "amount", "account"];

#[derive(Debug, Clone)]
pub struct Ledger {
    /// How many accounts the burst moves money among (2 to 20).
    pub accounts: usize,
    /// Opening balances are drawn from this range (cents), from the check's random stream.
    pub opening_balance: (i64, i64),
    /// Opens one account; knows `{{n}}` and `{{balance}}`. Must answer a 2xx with the id.
    pub open: ProbeRequest,
    /// Where the new account's id is in the open response (default `$.id`).
    pub account_id: JsonQuery,
    /// One transfer; knows `{{from}}`, `{{to}}` and `{{amount}}`.
    pub transfer: ProbeRequest,
    /// How many transfers are released together (2 to 500).
    pub transfers: usize,
    /// Amounts are drawn from this range (cents).
    pub amount: (i64, i64),
    /// Statuses meaning "applied" (default 201) and "refused, nothing moved" (default none).
    pub accepted: StatusSpec,
    pub refused: Option<StatusSpec>,
    /// Statuses meaning "an upstream the transfer needs was unavailable, nothing moved" (the
    /// README's answer when the fraud check does not answer in time). Under a burst of hundreds
    /// on a loaded machine the grader's own mock may be that slow: such a transfer is judged as
    /// not applied (the balances must show nothing moved), and a burst where more than half of
    /// the transfers gave up is not judged at all (an error, never a fail or a pass).
    pub unavailable: Option<StatusSpec>,
    /// Every transfer must be accepted: the accounts hold enough for any interleaving (checked
    /// when parsing), so a refusal can only be a deadlock or serialization failure surfacing.
    pub all_accepted: bool,
    /// Directions: `false` any two distinct accounts; `true` alternately A→B and B→A between
    /// the first two (the pattern that deadlocks when locks are taken in request order).
    pub opposite_pairs: bool,
    /// Reads one account's balance through the API; knows `{{account}}`.
    pub balance: ProbeRequest,
    /// Where the balance is in that response (default `$.balance_cents`).
    pub balance_path: JsonQuery,
    /// A white-box read of one balance (`$1` is the account id as text), e.g.
    /// `SELECT balance_cents FROM accounts WHERE id::text = $1`.
    pub balance_sql: Option<String>,
    /// A statement read while the burst runs, and after it: `balance` must equal `opening` plus
    /// the sum of `entries`.
    pub statement: Option<Statement>,
    /// What an account is called in messages (`"wallet"`; default `"account"`).
    pub noun: String,
}

#[derive(Debug, Clone)]
pub struct Statement {
    /// Knows `{{account}}`.
    pub request: ProbeRequest,
    pub balance: JsonQuery,
    pub opening: JsonQuery,
    /// Every entry's signed amount, e.g. `$.entries[*].amount_cents`.
    pub entries: JsonQuery,
    /// At most this many reads during the burst (they stop when the burst ends).
    pub reads: usize,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LedgerParams")]
pub struct RawLedger {
    accounts: usize,
    opening_balance: [i64; 2],
    #[schemars(with = "crate::probes::request::RawRequest")]
    open: toml::Value,
    account_id: Option<String>,
    #[schemars(with = "crate::probes::request::RawRequest")]
    transfer: toml::Value,
    transfers: usize,
    amount: [i64; 2],
    #[schemars(with = "Option<crate::spec::schema::StatusSchema>")]
    accepted: Option<toml::Value>,
    #[schemars(with = "Option<crate::spec::schema::StatusSchema>")]
    refused: Option<toml::Value>,
    #[schemars(with = "Option<crate::spec::schema::StatusSchema>")]
    unavailable: Option<toml::Value>,
    #[serde(default)]
    all_accepted: bool,
    #[serde(default)]
    opposite_pairs: bool,
    #[schemars(with = "crate::probes::request::RawRequest")]
    balance: toml::Value,
    balance_path: Option<String>,
    balance_sql: Option<String>,
    statement: Option<RawStatement>,
    noun: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LedgerStatement")]
pub struct RawStatement {
    #[schemars(with = "crate::probes::request::RawRequest")]
    request: toml::Value,
    balance: String,
    opening: String,
    entries: String,
    reads: Option<usize>,
}

const MAX_TRANSFERS: usize = 500;

pub fn parse_ledger(params: toml::Value) -> Result<Ledger, String> {
    let raw: RawLedger = de("params of `ledger`", params)?;
    if !(2..=20).contains(&raw.accounts) {
        return Err("`accounts` must be from 2 to 20".into());
    }
    if !(2..=MAX_TRANSFERS).contains(&raw.transfers) {
        return Err(format!("`transfers` must be from 2 to {MAX_TRANSFERS}"));
    }
    let range = |what: &str, [lo, hi]: [i64; 2], min: i64| {
        if lo < min || hi < lo {
            Err(format!("`{what}` is [low, high] with {min} <= low <= high"))
        } else {
            Ok((lo, hi))
        }
    };
    let opening_balance = range("opening_balance", raw.opening_balance, 0)?;
    let amount = range("amount", raw.amount, 1)?;
    if raw.all_accepted {
        // Any interleaving must leave every account solvent: an account may be the source of
        // every transfer before it receives any.
        let worst = amount.1.saturating_mul(raw.transfers as i64);
        if opening_balance.0 < worst {
            return Err(format!(
                "`all_accepted` needs opening balances of at least {worst} (transfers × the largest amount), so that no interleaving can overdraw an account"
            ));
        }
    }
    if raw.opposite_pairs && raw.accounts != 2 {
        return Err("`opposite_pairs` moves money between two accounts: set `accounts = 2`".into());
    }
    let no_status = |r: &ProbeRequest, what: &str| {
        if r.expect.status.is_some() && what == "transfer" {
            Err("the transfer's statuses are `accepted` and `refused`, not `status`".to_string())
        } else {
            Ok(())
        }
    };
    let transfer = request("ledger", 1, raw.transfer)?;
    no_status(&transfer, "transfer")?;
    let accepted = match &raw.accepted {
        Some(v) => StatusSpec::parse(v)?,
        None => StatusSpec {
            codes: vec![201],
            classes: Vec::new(),
        },
    };
    let refused = raw.refused.as_ref().map(StatusSpec::parse).transpose()?;
    if raw.all_accepted && refused.is_some() {
        return Err("`all_accepted` and `refused` contradict each other".into());
    }
    let unavailable = raw
        .unavailable
        .as_ref()
        .map(StatusSpec::parse)
        .transpose()?;
    if raw.all_accepted && unavailable.is_some() {
        return Err("`all_accepted` and `unavailable` contradict each other: every transfer must succeed there".into());
    }
    let statement = raw
        .statement
        .map(|s| -> Result<Statement, String> {
            let reads = s.reads.unwrap_or(50);
            if !(1..=500).contains(&reads) {
                return Err("`statement.reads` must be from 1 to 500".into());
            }
            Ok(Statement {
                request: request("ledger", 3, s.request)?,
                balance: query(&s.balance)?,
                opening: query(&s.opening)?,
                entries: query(&s.entries)?,
                reads,
            })
        })
        .transpose()?;
    if let Some(sql) = &raw.balance_sql {
        if !sql.contains("$1") || sql.contains("$2") || sql.contains("{{") {
            return Err("`balance_sql` takes the account id as $1 (text) and nothing else, e.g. SELECT balance_cents FROM accounts WHERE id::text = $1".into());
        }
    }
    Ok(Ledger {
        accounts: raw.accounts,
        opening_balance,
        open: request("ledger", 0, raw.open)?,
        account_id: query(raw.account_id.as_deref().unwrap_or("$.id"))?,
        transfer,
        transfers: raw.transfers,
        amount,
        accepted,
        refused,
        unavailable,
        all_accepted: raw.all_accepted,
        opposite_pairs: raw.opposite_pairs,
        balance: request("ledger", 2, raw.balance)?,
        balance_path: query(raw.balance_path.as_deref().unwrap_or("$.balance_cents"))?,
        balance_sql: raw.balance_sql,
        statement,
        noun: raw.noun.unwrap_or_else(|| "account".into()),
    })
}

impl Ledger {
    /// Template strings, without the probe's own variables, for the static check.
    pub fn template_strings(&self) -> Vec<String> {
        let mut requests = vec![
            self.open.clone(),
            self.transfer.clone(),
            self.balance.clone(),
        ];
        requests.extend(self.statement.iter().map(|s| s.request.clone()));
        crate::probes::request::template_strings_except(&requests, PROBE_VARS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        accounts = 2
        opening_balance = [100000, 100000]
        open = { method = "POST", path = "/accounts", json = { owner = "o {{n}}", balance_cents = "{{balance}}" }, status = 201 }
        transfer = { method = "POST", path = "/transfers", json = { from_account_id = "{{from}}", to_account_id = "{{to}}", amount_cents = "{{amount}}" } }
        transfers = 100
        amount = [1, 1000]
        balance = { method = "GET", path = "/accounts/{{account}}", status = 200 }
    "#;

    fn parse_with(extra: &str) -> Result<Ledger, String> {
        parse_ledger(toml::from_str(&format!("{BASE}\n{extra}")).unwrap())
    }

    #[test]
    fn unavailable_statuses_parse_and_contradict_all_accepted() {
        let p = parse_with("unavailable = [502, 503, 504]").unwrap();
        assert!(p.unavailable.unwrap().accepts(504));
        let both = parse_with("unavailable = [503]\nall_accepted = true").unwrap_err();
        assert!(both.contains("contradict"), "{both}");
    }

    #[test]
    fn all_accepted_needs_balances_no_interleaving_can_overdraw() {
        assert!(parse_with("all_accepted = true").is_ok());
        let low = parse_ledger(
            toml::from_str(
                &BASE
                    .replace("[100000, 100000]", "[5000, 5000]")
                    .replace("transfers = 100", "transfers = 100\nall_accepted = true"),
            )
            .unwrap(),
        );
        assert!(low.unwrap_err().contains("at least 100000"));
    }

    #[test]
    fn a_transfer_is_judged_by_accepted_and_refused() {
        let p = parse_with("refused = 409").unwrap();
        assert!(p.accepted.accepts(201) && p.refused.unwrap().accepts(409));
        assert!(parse_with("refused = 409\nall_accepted = true").is_err());
        let with_status = BASE.replace(
            "amount_cents = \"{{amount}}\" } }",
            "amount_cents = \"{{amount}}\" }, status = 201 }",
        );
        assert!(parse_ledger(toml::from_str(&with_status).unwrap()).is_err());
    }

    #[test]
    fn probe_variables_are_not_exercise_variables() {
        let p = parse_with("").unwrap();
        assert!(
            p.template_strings().is_empty(),
            "{:?}",
            p.template_strings()
        );
    }
}
