//! A DNS server on loopback answering from a case's `dns` table, for the checks that need a
//! real resolver (sender authentication goes through mail-auth and hickory). Names in the table
//! answer with their records (TXT strings split at 255 bytes); other names do not exist.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType as Wire};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::dns::{RecordType, StaticDns};

/// Time to live of every answer.
const TTL: u32 = 300;

pub struct ScriptedDnsServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ScriptedDnsServer {
    pub async fn start(table: Arc<StaticDns>) -> std::io::Result<ScriptedDnsServer> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                if let Some(reply) = answer(&buf[..len], &table) {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        Ok(ScriptedDnsServer { addr, task })
    }
}

impl Drop for ScriptedDnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The response to one query, or nothing for what is not a query.
fn answer(packet: &[u8], table: &StaticDns) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    let query = request.queries.first()?.clone();
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    let name = query.name.to_ascii();
    let kind = match query.query_type {
        Wire::A => Some(RecordType::A),
        Wire::AAAA => Some(RecordType::Aaaa),
        Wire::MX => Some(RecordType::Mx),
        Wire::TXT => Some(RecordType::Txt),
        _ => None,
    };
    let found = kind.and_then(|kind| table.get(kind, &name));
    match found {
        Some(answers) => {
            for text in answers {
                if let Some(data) = rdata(query.query_type, text) {
                    response.add_answer(Record::from_rdata(query.name.clone(), TTL, data));
                }
            }
        }
        None if table.has_name(&name) => {}
        None => response.metadata.response_code = ResponseCode::NXDomain,
    }
    response.add_query(query);
    response.to_vec().ok()
}

/// One record's data from the table's text form (`PREF HOST` for MX).
fn rdata(kind: Wire, text: &str) -> Option<RData> {
    Some(match kind {
        Wire::A => RData::A(A(text.trim().parse().ok()?)),
        Wire::AAAA => RData::AAAA(AAAA(text.trim().parse().ok()?)),
        Wire::MX => {
            let (preference, host) = text.trim().split_once(char::is_whitespace)?;
            RData::MX(MX::new(
                preference.parse().ok()?,
                Name::from_str(host.trim()).ok()?,
            ))
        }
        Wire::TXT => {
            let strings = text
                .as_bytes()
                .chunks(255)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            RData::TXT(TXT::new(strings))
        }
        _ => return None,
    })
}
