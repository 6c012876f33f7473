//! `grpc_contract` parameters: the exercise's `.proto` (read and compiled when the exercise
//! loads), the service it defines, and the services reflection must list.

use prost_reflect::DescriptorPool;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::de;

#[derive(Debug, Clone)]
pub struct GrpcContract {
    /// The `.proto` file, relative to the exercise's folder.
    pub proto: String,
    /// The compiled contract; `None` until the exercise loader read the file.
    pub contract: Option<DescriptorPool>,
    /// The contract's service (`shop.v1.Shop`).
    pub service: String,
    /// Services reflection's list must name (the contract's service is always one).
    pub listed: Vec<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "GrpcContractParams")]
pub struct Raw {
    proto: String,
    service: String,
    #[serde(default)]
    listed: Vec<String>,
}

pub fn parse(params: toml::Value) -> Result<GrpcContract, String> {
    let raw: Raw = de("params of `grpc_contract`", params)?;
    if raw.proto.contains("..") || raw.proto.starts_with('/') {
        return Err(format!(
            "`proto` names a file in the exercise's folder, got {:?}",
            raw.proto
        ));
    }
    let mut listed = vec![raw.service.clone()];
    listed.extend(raw.listed.into_iter().filter(|s| *s != raw.service));
    Ok(GrpcContract {
        proto: raw.proto,
        contract: None,
        service: raw.service,
        listed,
    })
}

impl GrpcContract {
    /// Compiles the `.proto` the loader read; `Err` says why it does not compile or lacks the
    /// service.
    pub fn load(&mut self, text: &str) -> Result<(), String> {
        let pool = crate::grpc::contract::compile(&self.proto, text)?;
        if pool.get_service_by_name(&self.service).is_none() {
            return Err(format!(
                "{} defines no service {}",
                self.proto, self.service
            ));
        }
        self.contract = Some(pool);
        Ok(())
    }
}
