//! MX look-ups over a real DNS resolver (hickory), for the mail-server
//! deny-list. The server may be configured (`mail_login.dns_server`);
//! otherwise the system's resolver configuration is used.
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use crate::core::{MxAnswer, MxLookup};

pub struct DnsMx {
    resolver: TokioResolver,
}

impl DnsMx {
    /// A resolver asking `server` (UDP, then TCP) or the system's servers.
    pub fn new(server: Option<SocketAddr>, timeout: Duration) -> Result<Self, String> {
        let mut builder = match server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                Resolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => Resolver::builder_tokio()
                .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?,
        };
        let opts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = 2;
        Ok(DnsMx {
            resolver: builder.build().map_err(|e| e.to_string())?,
        })
    }
}

#[async_trait]
impl MxLookup for DnsMx {
    async fn mx(&self, domain: &str) -> Result<MxAnswer, String> {
        // Fully qualified: never let a search domain turn `example.com` into
        // `example.com.corp.internal`.
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.lookup(fqdn.as_str(), RecordType::MX).await {
            Ok(lookup) => {
                let mut hosts = Vec::new();
                for record in lookup.answers() {
                    if let RData::MX(mx) = &record.data {
                        if mx.exchange.is_root() {
                            return Ok(MxAnswer::NullMx);
                        }
                        hosts.push(
                            mx.exchange
                                .to_lowercase()
                                .to_ascii()
                                .trim_end_matches('.')
                                .to_string(),
                        );
                    }
                }
                Ok(if hosts.is_empty() {
                    MxAnswer::None
                } else {
                    MxAnswer::Hosts(hosts)
                })
            }
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(MxAnswer::None),
            Err(e) => Err(e.to_string()),
        }
    }
}
