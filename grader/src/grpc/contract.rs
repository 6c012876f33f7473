//! The exercise's `.proto` against what a service's reflection describes.
//!
//! On the wire gRPC needs only the method paths and the field numbers, but a client generated from
//! the exercise's `.proto` also relies on each field's type and cardinality, and a person reading
//! the reflected schema relies on the names. So every method of the expected service must be
//! served with the same input, output and streaming, and every field of every message those
//! methods reach must be there with the same number, name, type and cardinality. What the service
//! adds (methods, messages, fields) is its own business.

use std::collections::BTreeSet;
use std::path::Path;

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor, ServiceDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

/// Compiles `source`, the text of the exercise's file `name` (`shop.proto`), with protox: no
/// `protoc` needed, and `google/protobuf/*.proto` imports come from protox's own copies.
pub fn compile(name: &str, source: &str) -> Result<DescriptorPool, String> {
    struct Exercise {
        name: String,
        source: String,
    }
    impl FileResolver for Exercise {
        fn resolve_path(&self, path: &Path) -> Option<String> {
            (path == Path::new(&self.name)).then(|| self.name.clone())
        }
        fn open_file(&self, name: &str) -> Result<File, protox::Error> {
            if name == self.name {
                File::from_source(name, &self.source)
            } else {
                Err(protox::Error::file_not_found(name))
            }
        }
    }
    let mut resolver = ChainFileResolver::new();
    resolver.add(Exercise {
        name: name.to_string(),
        source: source.to_string(),
    });
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler
        .open_file(name)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(compiler.descriptor_pool())
}

/// Every way `served` departs from `expected`, in words, in the order of the expected file; empty
/// when the served schema keeps the contract.
pub fn differences(expected: &ServiceDescriptor, served: &DescriptorPool) -> Vec<String> {
    let service_name = expected.full_name();
    let Some(service) = served.get_service_by_name(service_name) else {
        return vec![format!(
            "the service {service_name} is not in the files reflection gave"
        )];
    };
    let mut out = Vec::new();
    let mut messages: Vec<MessageDescriptor> = Vec::new();
    for method in expected.methods() {
        let Some(found) = service.methods().find(|m| m.name() == method.name()) else {
            out.push(format!(
                "the method {service_name}/{} is missing",
                method.name()
            ));
            continue;
        };
        let name = format!("{service_name}/{}", method.name());
        for (what, want, got) in [
            ("takes", method.input(), found.input()),
            ("returns", method.output(), found.output()),
        ] {
            if want.full_name() != got.full_name() {
                out.push(format!(
                    "{name} {what} {}, the .proto says {}",
                    got.full_name(),
                    want.full_name()
                ));
            }
            messages.push(want);
        }
        for (side, want, got) in [
            (
                "client",
                method.is_client_streaming(),
                found.is_client_streaming(),
            ),
            (
                "server",
                method.is_server_streaming(),
                found.is_server_streaming(),
            ),
        ] {
            if want != got {
                let is = |streams: bool| if streams { "a stream" } else { "one message" };
                out.push(format!(
                    "{name}: the {side} sends {}, the .proto says {}",
                    is(got),
                    is(want)
                ));
            }
        }
    }
    let mut seen = BTreeSet::new();
    while let Some(message) = messages.pop() {
        if !seen.insert(message.full_name().to_string()) {
            continue;
        }
        let Some(found) = served.get_message_by_name(message.full_name()) else {
            out.push(format!("the message {} is missing", message.full_name()));
            continue;
        };
        for field in message.fields() {
            if let Kind::Message(inner) = field.kind() {
                messages.push(inner);
            }
            compare_field(&message, &field, &found, &mut out);
        }
    }
    out
}

fn compare_field(
    message: &MessageDescriptor,
    want: &FieldDescriptor,
    served: &MessageDescriptor,
    out: &mut Vec<String>,
) {
    let at = format!(
        "{}.{} (field {})",
        message.full_name(),
        want.name(),
        want.number()
    );
    let Some(got) = served.get_field(want.number()) else {
        out.push(format!("{at} is missing"));
        return;
    };
    if got.name() != want.name() {
        out.push(format!("{at} is named {}", got.name()));
    }
    if kind_name(&got.kind()) != kind_name(&want.kind()) {
        out.push(format!(
            "{at} has the type {}, the .proto says {}",
            kind_name(&got.kind()),
            kind_name(&want.kind())
        ));
    }
    if cardinality(got.clone()) != cardinality(want.clone()) {
        out.push(format!(
            "{at} is {}, the .proto says {}",
            cardinality(got),
            cardinality(want.clone())
        ));
    }
}

fn cardinality(field: FieldDescriptor) -> &'static str {
    if field.is_map() {
        "a map"
    } else if field.is_list() {
        "repeated"
    } else if field.supports_presence() && field.containing_oneof().is_none() {
        "optional (with presence)"
    } else {
        "singular"
    }
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => e.full_name().to_string(),
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
    }
}
