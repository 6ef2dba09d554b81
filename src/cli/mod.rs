//! The user-facing commands, `cephdr status` and `cephdr failover plan|start|watch`, also run as the kubectl
//! plugin `kubectl cephdr`. They only read and create resources through the Kubernetes API: what they show
//! is what the operator wrote into the statuses. Rendering (objects → rows → text) is pure; the `run`
//! functions do the API calls.

pub mod failover;
#[cfg(test)]
mod fixtures;
mod progress;
pub mod status;
mod table;

use std::{ffi::OsStr, path::PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError},
    Client, Config,
};

/// The name kubectl runs the plugin by (`kubectl cephdr ...` finds `kubectl-cephdr` on PATH).
pub const KUBECTL_PLUGIN: &str = "kubectl-cephdr";

/// Whether the process runs as the kubectl plugin, judging by the name it was invoked by (argv[0]).
pub fn is_kubectl_plugin(argv0: &OsStr) -> bool {
    std::path::Path::new(argv0).file_name() == Some(OsStr::new(KUBECTL_PLUGIN))
}

/// Where the commands find the API server, as kubectl does.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config, else the in-cluster config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
}

impl KubeArgs {
    /// A client for the chosen kubeconfig and context.
    pub async fn client(&self) -> Result<Client> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let file = Kubeconfig::read_from(path).map_err(Error::Kubeconfig)?;
                Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(Error::Kubeconfig)?
            }
            // A context only exists in a kubeconfig: no in-cluster fallback.
            (None, Some(_)) => Config::from_kubeconfig(&options)
                .await
                .map_err(Error::Kubeconfig)?,
            (None, None) => Config::infer().await.map_err(Error::NoConfig)?,
        };
        Client::try_from(config).map_err(|source| Error::Kube {
            what: "create the Kubernetes client".into(),
            source,
        })
    }

    /// The namespace the command works in: `--namespace`, else the context's.
    pub fn namespace(&self, client: &Client) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot use the kubeconfig")]
    Kubeconfig(#[source] KubeconfigError),
    #[error("no kubeconfig ($KUBECONFIG, ~/.kube/config) and not running in a cluster")]
    NoConfig(#[source] InferConfigError),
    #[error("{what}: not found")]
    NotFound { what: String },
    #[error("{what}: the API server does not serve this kind; are the cephdr CRDs installed?")]
    NotInstalled { what: String },
    #[error("{what}: forbidden: {message}")]
    Forbidden { what: String, message: String },
    #[error("{what}: rejected: {message}")]
    Rejected { what: String, message: String },
    #[error("{what}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}")]
    Watch {
        what: String,
        #[source]
        source: kube::runtime::watcher::Error,
    },
    #[error("lost FailoverRequest {namespace}/{name}: {why}")]
    Lost {
        namespace: String,
        name: String,
        why: &'static str,
    },
    #[error("FailoverRequest {namespace}/{name} failed ({reason}): {message}")]
    Failed {
        namespace: String,
        name: String,
        reason: String,
        message: String,
    },
    #[error(
        "FailoverRequest {namespace}/{name}: no plan from the operator after {seconds} s; is it running and \
         watching namespace {namespace}?"
    )]
    NoPlan {
        namespace: String,
        name: String,
        seconds: u64,
    },
    #[error("render JSON")]
    Json(#[from] serde_json::Error),
    #[error("render YAML")]
    Yaml(#[from] serde_yaml::Error),
    #[error("write the output")]
    Output(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A condition's status; absent when it is not set or `Unknown`.
fn condition_state(conditions: &[Condition], type_: &str) -> Option<bool> {
    match crate::api::conditions::find(conditions, type_)?.status.as_str() {
        "True" => Some(true),
        "False" => Some(false),
        _ => None,
    }
}

/// Names a failed API call (`what`, e.g. `get FailoverRequest dr/move`) by what the API server answered.
fn api_error(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| match &source {
        kube::Error::Api(status) => {
            let message = status.message.clone();
            match status.code {
                // A missing object's 404 names it; a kind the server does not serve has nobody to name.
                404 if status.details.as_ref().is_some_and(|d| !d.name.is_empty()) => {
                    Error::NotFound { what }
                }
                404 => Error::NotInstalled { what },
                401 | 403 => Error::Forbidden { what, message },
                400 | 409 | 422 => Error::Rejected { what, message },
                _ => Error::Kube { what, source },
            }
        }
        _ => Error::Kube { what, source },
    }
}

/// Whether the error ends a watch, as opposed to one it recovers from by itself.
fn is_final(error: &Error) -> bool {
    !matches!(error, Error::Kube { .. } | Error::Watch { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API server's error answer; a missing object's names it.
    fn api(code: u16, name: &str) -> kube::Error {
        let status = serde_json::json!({"status": "Failure", "code": code, "message": "denied",
                                         "details": {"name": name}});
        kube::Error::Api(Box::new(serde_json::from_value(status).expect("a Status")))
    }

    #[test]
    fn the_plugin_is_recognised_by_the_name_it_runs_under() {
        assert!(is_kubectl_plugin(OsStr::new("/usr/local/bin/kubectl-cephdr")));
        assert!(is_kubectl_plugin(OsStr::new("kubectl-cephdr")));
        assert!(!is_kubectl_plugin(OsStr::new("/usr/bin/cephdr")));
        assert!(!is_kubectl_plugin(OsStr::new("kubectl-cephdr-failover")));
    }

    #[test]
    fn api_errors_say_what_was_missing_or_refused() {
        let what = || "get FailoverRequest dr/move".to_string();
        let shown = |error: Error| error.to_string();
        assert_eq!(
            shown(api_error(what())(api(404, "move"))),
            "get FailoverRequest dr/move: not found"
        );
        assert!(shown(api_error(what())(api(404, ""))).contains("are the cephdr CRDs installed?"));
        assert_eq!(
            shown(api_error(what())(api(403, ""))),
            "get FailoverRequest dr/move: forbidden: denied"
        );
        assert!(!is_final(&api_error(what())(api(500, ""))));
        assert!(is_final(&api_error(what())(api(403, ""))));
    }
}
