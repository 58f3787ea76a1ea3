//! The milter protocol's wire format (Sendmail's libmilter, protocol version 6), both ways:
//! commands an MTA sends to a filter and the filter's responses. Each packet is a 4-byte
//! big-endian length (the command byte included), a command byte and its data; strings are
//! NUL-terminated. Framing is bounded: a packet longer than the caller's limit is an error
//! before any of it is buffered.

use std::fmt;

/// The protocol version spoken (libmilter 8.14+, Postfix 2.6+).
pub const VERSION: u32 = 6;

/// Body chunks are at most this long (libmilter's MILTER_CHUNK_SIZE).
pub const CHUNK: usize = 65535;

/// What a filter may do to a message (SMFIF_*), announced at negotiation.
pub mod actions {
    pub const ADD_HEADERS: u32 = 0x1;
    pub const CHANGE_BODY: u32 = 0x2;
    pub const ADD_RCPT: u32 = 0x4;
    pub const DELETE_RCPT: u32 = 0x8;
    pub const CHANGE_HEADERS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHANGE_FROM: u32 = 0x40;
    pub const ADD_RCPT_PAR: u32 = 0x80;
    pub const SET_SYMBOL_LIST: u32 = 0x100;
    pub const ALL: u32 = 0x1ff;
}

/// Steps a filter does not want, or will not answer (SMFIP_*), announced at negotiation.
pub mod steps {
    pub const NO_CONNECT: u32 = 0x1;
    pub const NO_HELO: u32 = 0x2;
    pub const NO_MAIL: u32 = 0x4;
    pub const NO_RCPT: u32 = 0x8;
    pub const NO_BODY: u32 = 0x10;
    pub const NO_HEADERS: u32 = 0x20;
    pub const NO_EOH: u32 = 0x40;
    pub const NO_REPLY_HEADER: u32 = 0x80;
    pub const NO_UNKNOWN: u32 = 0x100;
    pub const NO_DATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const RCPT_REJECTED: u32 = 0x800;
    pub const NO_REPLY_CONNECT: u32 = 0x1000;
    pub const NO_REPLY_HELO: u32 = 0x2000;
    pub const NO_REPLY_MAIL: u32 = 0x4000;
    pub const NO_REPLY_RCPT: u32 = 0x8000;
    pub const NO_REPLY_DATA: u32 = 0x10000;
    pub const NO_REPLY_UNKNOWN: u32 = 0x20000;
    pub const NO_REPLY_EOH: u32 = 0x40000;
    pub const NO_REPLY_BODY: u32 = 0x80000;
    pub const HEADER_LEADING_SPACE: u32 = 0x100000;
    /// Every flag of protocol version 6.
    pub const ALL: u32 = 0x1fffff;
}

/// Why bytes are not a valid packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("packet of {0} bytes is over the limit of {1}")]
    TooLong(usize, usize),
    #[error("empty packet")]
    Empty,
    #[error("unknown command {0:?}")]
    UnknownCommand(char),
    #[error("malformed {0} packet")]
    Malformed(&'static str),
}

/// The connecting client's address, as the MTA saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    Unknown,
    Inet(std::net::Ipv4Addr),
    Inet6(std::net::Ipv6Addr),
    Unix(String),
}

/// The three numbers both sides exchange at negotiation: the protocol version, the actions
/// (offered by the MTA, wanted by the filter) and the steps (offered, declined).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiation {
    pub version: u32,
    pub actions: u32,
    pub steps: u32,
}

impl Negotiation {
    fn read(data: &[u8]) -> Result<Negotiation, CodecError> {
        // A filter's answer may carry symbol lists after the numbers; they are not used here.
        let mut r = Reader::new(data, "negotiate");
        Ok(Negotiation {
            version: r.u32()?,
            actions: r.u32()?,
            steps: r.u32()?,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        for n in [self.version, self.actions, self.steps] {
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// What an MTA sends a filter (SMFIC_*).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// 'O': version, actions offered, steps offered.
    Negotiate(Negotiation),
    /// 'D': macros for the step named by `stage` (a command letter).
    Macros {
        stage: u8,
        pairs: Vec<(String, String)>,
    },
    /// 'C': client host name, address family and address, port.
    Connect {
        hostname: String,
        family: Family,
        port: u16,
    },
    /// 'H'
    Helo(String),
    /// 'M': the sender and its ESMTP arguments.
    Mail(Vec<String>),
    /// 'R': the recipient and its ESMTP arguments.
    Rcpt(Vec<String>),
    /// 'T'
    Data,
    /// 'L'
    Header { name: String, value: String },
    /// 'N'
    EndOfHeaders,
    /// 'B'
    Body(Vec<u8>),
    /// 'E'
    EndOfMessage,
    /// 'A': forget the message, keep the connection.
    Abort,
    /// 'Q'
    Quit,
    /// 'K': quit, a new connection follows on this channel.
    QuitNewConnection,
    /// 'U': an SMTP command the MTA did not know.
    Unknown(String),
}

/// What a filter answers (SMFIR_*).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// 'O': version, actions wanted, steps declined.
    Negotiate(Negotiation),
    /// 'c'
    Continue,
    /// 'a'
    Accept,
    /// 'r'
    Reject,
    /// 't'
    Tempfail,
    /// 'd'
    Discard,
    /// 'y': a whole SMTP reply, e.g. `550 5.7.1 Go away`.
    ReplyCode(String),
    /// 'p': still working, do not time out.
    Progress,
    /// 's': no more body chunks, please.
    Skip,
    /// 'h'
    AddHeader { name: String, value: String },
    /// 'i': at `index` (0 is the top).
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// 'm': the `index`th (from 1) field of that name; an empty value deletes it.
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// 'b': one chunk of the new body.
    ReplaceBody(Vec<u8>),
    /// '+'
    AddRcpt(String),
    /// '2': with ESMTP arguments.
    AddRcptPar { rcpt: String, args: String },
    /// '-'
    DeleteRcpt(String),
    /// 'e'
    ChangeFrom { sender: String, args: String },
    /// 'q'
    Quarantine(String),
}

/// The length prefix of a packet starting with `header`, checked against `max`.
pub fn packet_length(header: [u8; 4], max: usize) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(CodecError::Empty);
    }
    if len > max {
        return Err(CodecError::TooLong(len, max));
    }
    Ok(len)
}

/// One packet: length, command byte, data.
pub fn frame(command: u8, data: &[u8]) -> Vec<u8> {
    let len = u32::try_from(data.len() + 1).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(data.len() + 5);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(command);
    out.extend_from_slice(data);
    out
}

/// Reads NUL-terminated strings and big-endian integers from a packet's data.
struct Reader<'a> {
    data: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], what: &'static str) -> Self {
        Reader { data, what }
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        let (head, rest) = self
            .data
            .split_first_chunk::<4>()
            .ok_or(CodecError::Malformed(self.what))?;
        self.data = rest;
        Ok(u32::from_be_bytes(*head))
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        let (head, rest) = self
            .data
            .split_first_chunk::<2>()
            .ok_or(CodecError::Malformed(self.what))?;
        self.data = rest;
        Ok(u16::from_be_bytes(*head))
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let (first, rest) = self
            .data
            .split_first()
            .ok_or(CodecError::Malformed(self.what))?;
        self.data = rest;
        Ok(*first)
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let end = self
            .data
            .iter()
            .position(|&b| b == 0)
            .ok_or(CodecError::Malformed(self.what))?;
        let text = String::from_utf8_lossy(&self.data[..end]).into_owned();
        self.data = &self.data[end + 1..];
        Ok(text)
    }

    /// Every remaining NUL-terminated string.
    fn strings(&mut self) -> Result<Vec<String>, CodecError> {
        let mut all = Vec::new();
        while !self.data.is_empty() {
            all.push(self.string()?);
        }
        Ok(all)
    }

    fn rest(self) -> Vec<u8> {
        self.data.to_vec()
    }
}

fn push_string(out: &mut Vec<u8>, text: &str) {
    // A NUL inside would end the string early on the other side.
    out.extend(text.bytes().filter(|&b| b != 0));
    out.push(0);
}

impl Command {
    /// The command from one packet's command byte and data.
    pub fn decode(command: u8, data: &[u8]) -> Result<Command, CodecError> {
        Ok(match command {
            b'O' => Command::Negotiate(Negotiation::read(data)?),
            b'D' => {
                let mut r = Reader::new(data, "macro");
                let stage = r.byte()?;
                let strings = r.strings()?;
                let pairs = strings
                    .chunks(2)
                    .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
                    .collect();
                Command::Macros { stage, pairs }
            }
            b'C' => {
                let mut r = Reader::new(data, "connect");
                let hostname = r.string()?;
                let family = r.byte()?;
                let (family, port) = match family {
                    b'U' => (Family::Unknown, 0),
                    b'4' | b'6' | b'L' => {
                        let port = r.u16()?;
                        let address = r.string()?;
                        let family = match family {
                            b'4' => Family::Inet(
                                address
                                    .parse()
                                    .map_err(|_| CodecError::Malformed("connect"))?,
                            ),
                            b'6' => Family::Inet6(
                                address
                                    .trim_start_matches("IPv6:")
                                    .parse()
                                    .map_err(|_| CodecError::Malformed("connect"))?,
                            ),
                            _ => Family::Unix(address),
                        };
                        (family, port)
                    }
                    _ => return Err(CodecError::Malformed("connect")),
                };
                Command::Connect {
                    hostname,
                    family,
                    port,
                }
            }
            b'H' => Command::Helo(Reader::new(data, "helo").string()?),
            b'M' => Command::Mail(Reader::new(data, "mail").strings()?),
            b'R' => Command::Rcpt(Reader::new(data, "rcpt").strings()?),
            b'T' => Command::Data,
            b'L' => {
                let mut r = Reader::new(data, "header");
                Command::Header {
                    name: r.string()?,
                    value: r.string()?,
                }
            }
            b'N' => Command::EndOfHeaders,
            b'B' => Command::Body(data.to_vec()),
            b'E' => Command::EndOfMessage,
            b'A' => Command::Abort,
            b'Q' => Command::Quit,
            b'K' => Command::QuitNewConnection,
            b'U' => Command::Unknown(Reader::new(data, "unknown").string()?),
            other => return Err(CodecError::UnknownCommand(other as char)),
        })
    }

    /// The whole packet.
    pub fn encode(&self) -> Vec<u8> {
        let mut data = Vec::new();
        let code = match self {
            Command::Negotiate(numbers) => {
                numbers.write(&mut data);
                b'O'
            }
            Command::Macros { stage, pairs } => {
                data.push(*stage);
                for (name, value) in pairs {
                    push_string(&mut data, name);
                    push_string(&mut data, value);
                }
                b'D'
            }
            Command::Connect {
                hostname,
                family,
                port,
            } => {
                push_string(&mut data, hostname);
                let (letter, address) = match family {
                    Family::Unknown => ('U', None),
                    Family::Inet(ip) => ('4', Some(ip.to_string())),
                    Family::Inet6(ip) => ('6', Some(ip.to_string())),
                    Family::Unix(path) => ('L', Some(path.clone())),
                };
                data.push(letter as u8);
                if let Some(address) = address {
                    data.extend_from_slice(&port.to_be_bytes());
                    push_string(&mut data, &address);
                }
                b'C'
            }
            Command::Helo(name) => {
                push_string(&mut data, name);
                b'H'
            }
            Command::Mail(args) | Command::Rcpt(args) => {
                for arg in args {
                    push_string(&mut data, arg);
                }
                if matches!(self, Command::Mail(_)) {
                    b'M'
                } else {
                    b'R'
                }
            }
            Command::Data => b'T',
            Command::Header { name, value } => {
                push_string(&mut data, name);
                push_string(&mut data, value);
                b'L'
            }
            Command::EndOfHeaders => b'N',
            Command::Body(chunk) => {
                data.extend_from_slice(chunk);
                b'B'
            }
            Command::EndOfMessage => b'E',
            Command::Abort => b'A',
            Command::Quit => b'Q',
            Command::QuitNewConnection => b'K',
            Command::Unknown(line) => {
                push_string(&mut data, line);
                b'U'
            }
        };
        frame(code, &data)
    }
}

impl Response {
    /// What the response is, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Negotiate(_) => "negotiate",
            Response::Continue => "continue",
            Response::Accept => "accept",
            Response::Reject => "reject",
            Response::Tempfail => "tempfail",
            Response::Discard => "discard",
            Response::ReplyCode(_) => "reply code",
            Response::Progress => "progress",
            Response::Skip => "skip",
            Response::AddHeader { .. } => "add header",
            Response::InsertHeader { .. } => "insert header",
            Response::ChangeHeader { .. } => "change header",
            Response::ReplaceBody(_) => "replace body",
            Response::AddRcpt(_) | Response::AddRcptPar { .. } => "add recipient",
            Response::DeleteRcpt(_) => "delete recipient",
            Response::ChangeFrom { .. } => "change sender",
            Response::Quarantine(_) => "quarantine",
        }
    }

    /// The response from one packet's command byte and data.
    pub fn decode(command: u8, data: &[u8]) -> Result<Response, CodecError> {
        Ok(match command {
            b'O' => Response::Negotiate(Negotiation::read(data)?),
            b'c' => Response::Continue,
            b'a' => Response::Accept,
            b'r' => Response::Reject,
            b't' => Response::Tempfail,
            b'd' => Response::Discard,
            b'y' => Response::ReplyCode(Reader::new(data, "reply").string()?),
            b'p' => Response::Progress,
            b's' => Response::Skip,
            b'h' => {
                let mut r = Reader::new(data, "add header");
                Response::AddHeader {
                    name: r.string()?,
                    value: r.string()?,
                }
            }
            b'i' | b'm' => {
                let mut r = Reader::new(data, "header change");
                let (index, name, value) = (r.u32()?, r.string()?, r.string()?);
                if command == b'i' {
                    Response::InsertHeader { index, name, value }
                } else {
                    Response::ChangeHeader { index, name, value }
                }
            }
            b'b' => Response::ReplaceBody(Reader::new(data, "body").rest()),
            b'+' => Response::AddRcpt(Reader::new(data, "add rcpt").string()?),
            b'2' => {
                let mut r = Reader::new(data, "add rcpt");
                let rcpt = r.string()?;
                let args = if r.data.is_empty() {
                    String::new()
                } else {
                    r.string()?
                };
                Response::AddRcptPar { rcpt, args }
            }
            b'-' => Response::DeleteRcpt(Reader::new(data, "delete rcpt").string()?),
            b'e' => {
                let mut r = Reader::new(data, "change from");
                let sender = r.string()?;
                let args = if r.data.is_empty() {
                    String::new()
                } else {
                    r.string()?
                };
                Response::ChangeFrom { sender, args }
            }
            b'q' => Response::Quarantine(Reader::new(data, "quarantine").string()?),
            other => return Err(CodecError::UnknownCommand(other as char)),
        })
    }

    /// The whole packet.
    pub fn encode(&self) -> Vec<u8> {
        let mut data = Vec::new();
        let code = match self {
            Response::Negotiate(numbers) => {
                numbers.write(&mut data);
                b'O'
            }
            Response::Continue => b'c',
            Response::Accept => b'a',
            Response::Reject => b'r',
            Response::Tempfail => b't',
            Response::Discard => b'd',
            Response::ReplyCode(reply) => {
                push_string(&mut data, reply);
                b'y'
            }
            Response::Progress => b'p',
            Response::Skip => b's',
            Response::AddHeader { name, value } => {
                push_string(&mut data, name);
                push_string(&mut data, value);
                b'h'
            }
            Response::InsertHeader { index, name, value }
            | Response::ChangeHeader { index, name, value } => {
                data.extend_from_slice(&index.to_be_bytes());
                push_string(&mut data, name);
                push_string(&mut data, value);
                if matches!(self, Response::InsertHeader { .. }) {
                    b'i'
                } else {
                    b'm'
                }
            }
            Response::ReplaceBody(chunk) => {
                data.extend_from_slice(chunk);
                b'b'
            }
            Response::AddRcpt(rcpt) => {
                push_string(&mut data, rcpt);
                b'+'
            }
            Response::AddRcptPar { rcpt, args } => {
                push_string(&mut data, rcpt);
                push_string(&mut data, args);
                b'2'
            }
            Response::DeleteRcpt(rcpt) => {
                push_string(&mut data, rcpt);
                b'-'
            }
            Response::ChangeFrom { sender, args } => {
                push_string(&mut data, sender);
                push_string(&mut data, args);
                b'e'
            }
            Response::Quarantine(reason) => {
                push_string(&mut data, reason);
                b'q'
            }
        };
        frame(code, &data)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Family::Unknown => f.write_str("unknown"),
            Family::Inet(ip) => write!(f, "{ip}"),
            Family::Inet6(ip) => write!(f, "{ip}"),
            Family::Unix(path) => f.write_str(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits a packet into its command byte and data, checking the length prefix.
    fn unframe(packet: &[u8]) -> (u8, &[u8]) {
        let len = packet_length(packet[..4].try_into().expect("header"), 1 << 20).expect("len");
        assert_eq!(len, packet.len() - 4);
        (packet[4], &packet[5..])
    }

    #[test]
    fn commands_survive_a_round_trip() {
        let commands = [
            Command::Negotiate(Negotiation {
                version: 6,
                actions: actions::ALL,
                steps: steps::ALL,
            }),
            Command::Macros {
                stage: b'C',
                pairs: vec![("j".into(), "mx.example.org".into())],
            },
            Command::Connect {
                hostname: "client.example.net".into(),
                family: Family::Inet("192.0.2.1".parse().expect("ip")),
                port: 52525,
            },
            Command::Connect {
                hostname: "v6".into(),
                family: Family::Inet6("2001:db8::1".parse().expect("ip")),
                port: 25,
            },
            Command::Connect {
                hostname: "local".into(),
                family: Family::Unknown,
                port: 0,
            },
            Command::Helo("client.example.net".into()),
            Command::Mail(vec!["<a@example.net>".into(), "SIZE=100".into()]),
            Command::Rcpt(vec!["<b@example.org>".into()]),
            Command::Data,
            Command::Header {
                name: "Subject".into(),
                value: " hi".into(),
            },
            Command::EndOfHeaders,
            Command::Body(b"hello\r\n".to_vec()),
            Command::EndOfMessage,
            Command::Abort,
            Command::Quit,
            Command::QuitNewConnection,
            Command::Unknown("XFOO bar".into()),
        ];
        for command in commands {
            let packet = command.encode();
            let (code, data) = unframe(&packet);
            assert_eq!(
                Command::decode(code, data),
                Ok(command.clone()),
                "{command:?}"
            );
        }
    }

    #[test]
    fn responses_survive_a_round_trip() {
        let responses = [
            Response::Negotiate(Negotiation {
                version: 6,
                actions: actions::ADD_HEADERS,
                steps: steps::NO_UNKNOWN,
            }),
            Response::Continue,
            Response::Accept,
            Response::Reject,
            Response::Tempfail,
            Response::Discard,
            Response::ReplyCode("550 5.7.1 Spam".into()),
            Response::Progress,
            Response::Skip,
            Response::AddHeader {
                name: "X-Spam".into(),
                value: "yes".into(),
            },
            Response::InsertHeader {
                index: 0,
                name: "X-First".into(),
                value: "1".into(),
            },
            Response::ChangeHeader {
                index: 1,
                name: "Subject".into(),
                value: String::new(),
            },
            Response::ReplaceBody(b"new body\r\n".to_vec()),
            Response::AddRcpt("<c@example.org>".into()),
            Response::AddRcptPar {
                rcpt: "<d@example.org>".into(),
                args: "NOTIFY=NEVER".into(),
            },
            Response::DeleteRcpt("<b@example.org>".into()),
            Response::ChangeFrom {
                sender: "<bounce@example.org>".into(),
                args: String::new(),
            },
            Response::Quarantine("virus".into()),
        ];
        for response in responses {
            let packet = response.encode();
            let (code, data) = unframe(&packet);
            assert_eq!(
                Response::decode(code, data),
                Ok(response.clone()),
                "{response:?}"
            );
        }
    }

    #[test]
    fn bad_packets_are_errors() {
        assert_eq!(packet_length([0, 0, 0, 0], 100), Err(CodecError::Empty));
        assert_eq!(
            packet_length([0, 0, 1, 0], 100),
            Err(CodecError::TooLong(256, 100))
        );
        assert_eq!(
            packet_length([0xff; 4], usize::MAX >> 1).map(|_| ()),
            Ok(())
        );
        assert_eq!(
            Command::decode(b'O', &[0, 0, 0, 6]),
            Err(CodecError::Malformed("negotiate"))
        );
        assert_eq!(
            Command::decode(b'H', b"no terminator"),
            Err(CodecError::Malformed("helo"))
        );
        assert_eq!(
            Command::decode(b'C', b"host\0X"),
            Err(CodecError::Malformed("connect"))
        );
        assert_eq!(
            Command::decode(b'C', b"host\x004\x00\x19not-an-ip\0"),
            Err(CodecError::Malformed("connect"))
        );
        assert_eq!(
            Command::decode(b'z', b""),
            Err(CodecError::UnknownCommand('z'))
        );
        assert_eq!(
            Response::decode(b'i', &[0, 0]),
            Err(CodecError::Malformed("header change"))
        );
    }

    #[test]
    fn a_nul_inside_a_string_cannot_split_it() {
        let packet = Command::Helo("evil\0name".into()).encode();
        let (code, data) = unframe(&packet);
        assert_eq!(
            Command::decode(code, data),
            Ok(Command::Helo("evilname".into()))
        );
    }
}
