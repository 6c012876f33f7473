//! Local runtime (stub: being written).
use super::*;

pub struct LocalEnvironment;

impl LocalEnvironment {
    #[allow(clippy::type_complexity)]
    pub async fn start(
        _plan: &ServicePlan,
        _progress: &dyn ProgressSink,
    ) -> Result<(Self, Option<PostgresInfo>, Option<RedisInfo>, StartTimings, url::Url), StartError> {
        unimplemented!()
    }
    pub fn service_state(&self) -> ServiceState {
        unimplemented!()
    }
    pub fn service_log_tail(&self, _lines: usize) -> Vec<String> {
        unimplemented!()
    }
    pub async fn shutdown(self) -> Duration {
        unimplemented!()
    }
}
