//! Server reflection: which services a server serves, and the descriptors of their files.
//!
//! `grpc.reflection.v1.ServerReflection` first; a server that answers `UNIMPLEMENTED` there is
//! asked `grpc.reflection.v1alpha.ServerReflection` (grpc-go and grpcio served only `v1alpha` for
//! years). Each question is a stream of its own with one request and one response, which every
//! implementation answers, instead of one long stream that some close after the first answer.

use std::collections::BTreeSet;
use std::time::Duration;

use prost::Message;
use prost_reflect::DescriptorPool;
use prost_types::FileDescriptorProto;
use tonic::Code;

use super::{code_name, Channel};

/// A server names a file's dependencies by file name; following them stops here, far past any
/// real service, so that a server that invents file names cannot keep the grader asking.
const MAX_FILES: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReflectionVersion {
    V1,
    V1Alpha,
}

impl ReflectionVersion {
    pub fn service(self) -> &'static str {
        match self {
            ReflectionVersion::V1 => "grpc.reflection.v1.ServerReflection",
            ReflectionVersion::V1Alpha => "grpc.reflection.v1alpha.ServerReflection",
        }
    }
}

/// What a server said about itself.
#[derive(Debug, Clone)]
pub struct Reflected {
    pub version: ReflectionVersion,
    /// Every service `list_services` named, sorted.
    pub services: Vec<String>,
    /// The files that define `symbol` and everything they import.
    pub pool: DescriptorPool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReflectionError {
    /// Neither version is served: both answered `UNIMPLEMENTED`.
    NotServed,
    /// The server answered, but not as the reflection protocol says (an error response, bytes that
    /// are not a file descriptor, a file that imports one it cannot give).
    Broken(String),
    /// No answer: the connection failed or the question timed out.
    Unanswered(String),
}

impl std::fmt::Display for ReflectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReflectionError::NotServed => write!(
                f,
                "neither grpc.reflection.v1.ServerReflection nor \
                 grpc.reflection.v1alpha.ServerReflection is served (both answered UNIMPLEMENTED)"
            ),
            ReflectionError::Broken(why) | ReflectionError::Unanswered(why) => f.write_str(why),
        }
    }
}

/// One reflection question, whatever the version.
#[derive(Debug, Clone)]
enum Question {
    ListServices,
    FileContainingSymbol(String),
    FileByFilename(String),
}

impl std::fmt::Display for Question {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Question::ListServices => f.write_str("list_services"),
            Question::FileContainingSymbol(s) => write!(f, "file_containing_symbol({s:?})"),
            Question::FileByFilename(s) => write!(f, "file_by_filename({s:?})"),
        }
    }
}

/// One reflection answer, whatever the version.
enum Answer {
    Services(Vec<String>),
    Files(Vec<Vec<u8>>),
    Error { code: i32, message: String },
    Other,
}

enum AskError {
    Status(tonic::Status),
    NoResponse,
    TimedOut,
}

/// `ask_v1` and `ask_v1alpha`: the two versions' messages are the same but for their package.
macro_rules! asker {
    ($name:ident, $($pb:ident)::+) => {
        async fn $name(
            channel: Channel,
            question: &Question,
            timeout: Duration,
        ) -> Result<Answer, AskError> {
            use $($pb)::+ as pb;
            use pb::server_reflection_request::MessageRequest;
            use pb::server_reflection_response::MessageResponse;
            let message_request = match question {
                Question::ListServices => MessageRequest::ListServices(String::new()),
                Question::FileContainingSymbol(s) => MessageRequest::FileContainingSymbol(s.clone()),
                Question::FileByFilename(s) => MessageRequest::FileByFilename(s.clone()),
            };
            let request = pb::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(message_request),
            };
            let (inner, origin) = channel.parts();
            let mut client =
                pb::server_reflection_client::ServerReflectionClient::with_origin(inner, origin);
            let exchange = async move {
                let response = client
                    .server_reflection_info(futures_util::stream::iter([request]))
                    .await?;
                response.into_inner().message().await
            };
            let response = match tokio::time::timeout(timeout, exchange).await {
                Err(_) => return Err(AskError::TimedOut),
                Ok(Err(status)) => return Err(AskError::Status(status)),
                Ok(Ok(None)) => return Err(AskError::NoResponse),
                Ok(Ok(Some(response))) => response,
            };
            Ok(match response.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    Answer::Services(list.service.into_iter().map(|s| s.name).collect())
                }
                Some(MessageResponse::FileDescriptorResponse(files)) => {
                    Answer::Files(files.file_descriptor_proto)
                }
                Some(MessageResponse::ErrorResponse(e)) => Answer::Error {
                    code: e.error_code,
                    message: e.error_message,
                },
                _ => Answer::Other,
            })
        }
    };
}

asker!(ask_v1, tonic_reflection::pb::v1);
asker!(ask_v1alpha, tonic_reflection::pb::v1alpha);

async fn ask(
    version: ReflectionVersion,
    channel: &Channel,
    question: &Question,
    timeout: Duration,
) -> Result<Answer, AskError> {
    match version {
        ReflectionVersion::V1 => ask_v1(channel.clone(), question, timeout).await,
        ReflectionVersion::V1Alpha => ask_v1alpha(channel.clone(), question, timeout).await,
    }
}

fn describe(version: ReflectionVersion, question: &Question, error: AskError) -> ReflectionError {
    let asked = format!("{} {question}", version.service());
    match error {
        AskError::TimedOut => ReflectionError::Unanswered(format!("{asked}: no answer in time")),
        AskError::NoResponse => {
            ReflectionError::Broken(format!("{asked}: the stream ended without a response"))
        }
        AskError::Status(status) => {
            let text = format!(
                "{asked}: {} {:?}",
                code_name(status.code()),
                status.message()
            );
            if matches!(status.code(), Code::Unavailable | Code::Cancelled) {
                ReflectionError::Unanswered(text)
            } else {
                ReflectionError::Broken(text)
            }
        }
    }
}

/// Asks the server at `channel` which services it serves and for the files defining `symbol`
/// (a service's full name), with their imports; each question gets `timeout`.
pub async fn reflect(
    channel: &Channel,
    symbol: &str,
    timeout: Duration,
) -> Result<Reflected, ReflectionError> {
    let list = Question::ListServices;
    let (version, answer) = match ask(ReflectionVersion::V1, channel, &list, timeout).await {
        Err(AskError::Status(s)) if s.code() == Code::Unimplemented => {
            match ask(ReflectionVersion::V1Alpha, channel, &list, timeout).await {
                Err(AskError::Status(s)) if s.code() == Code::Unimplemented => {
                    return Err(ReflectionError::NotServed)
                }
                Err(e) => return Err(describe(ReflectionVersion::V1Alpha, &list, e)),
                Ok(answer) => (ReflectionVersion::V1Alpha, answer),
            }
        }
        Err(e) => return Err(describe(ReflectionVersion::V1, &list, e)),
        Ok(answer) => (ReflectionVersion::V1, answer),
    };
    let mut services = match answer {
        Answer::Services(services) => services,
        other => return Err(unexpected(version, &list, other)),
    };
    services.sort();
    services.dedup();

    let mut files: Vec<FileDescriptorProto> = Vec::new();
    let mut have: BTreeSet<String> = BTreeSet::new();
    let mut wanted: Vec<Question> = vec![Question::FileContainingSymbol(symbol.to_string())];
    while let Some(question) = wanted.pop() {
        let answer = ask(version, channel, &question, timeout)
            .await
            .map_err(|e| describe(version, &question, e))?;
        let blobs = match answer {
            Answer::Files(blobs) => blobs,
            other => return Err(unexpected(version, &question, other)),
        };
        if blobs.is_empty() {
            return Err(ReflectionError::Broken(format!(
                "{} {question}: the response holds no file",
                version.service()
            )));
        }
        for blob in blobs {
            let file = FileDescriptorProto::decode(blob.as_slice()).map_err(|e| {
                ReflectionError::Broken(format!(
                    "{} {question}: a file_descriptor_proto entry is not a FileDescriptorProto: {e}",
                    version.service()
                ))
            })?;
            let name = file.name().to_string();
            if !have.insert(name) {
                continue;
            }
            for dependency in &file.dependency {
                if !have.contains(dependency)
                    && !wanted
                        .iter()
                        .any(|q| matches!(q, Question::FileByFilename(d) if d == dependency))
                {
                    wanted.push(Question::FileByFilename(dependency.clone()));
                }
            }
            files.push(file);
            if files.len() > MAX_FILES {
                return Err(ReflectionError::Broken(format!(
                    "{}: more than {MAX_FILES} files import each other from {symbol}",
                    version.service()
                )));
            }
        }
        // A file_by_filename answer may hold a file already had (a server that sends the
        // transitive closure each time); the loop only asks for names it has not seen.
        wanted.retain(|q| !matches!(q, Question::FileByFilename(d) if have.contains(d)));
    }
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files).map_err(|e| {
        ReflectionError::Broken(format!(
            "{}: the files reflection gave for {symbol} do not form a valid schema: {e}",
            version.service()
        ))
    })?;
    Ok(Reflected {
        version,
        services,
        pool,
    })
}

fn unexpected(version: ReflectionVersion, question: &Question, answer: Answer) -> ReflectionError {
    let got = match answer {
        Answer::Error { code, message } => {
            let code = code_name(Code::from_i32(code));
            format!("an error_response: {code} {message:?}")
        }
        Answer::Services(_) => "a list_services_response".to_string(),
        Answer::Files(_) => "a file_descriptor_response".to_string(),
        Answer::Other => "a response of another kind".to_string(),
    };
    ReflectionError::Broken(format!("{} {question}: got {got}", version.service()))
}
