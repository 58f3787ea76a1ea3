//! `take` on whole commands, one extension at a time.

use super::*;

/// MODSEQ n is `UID n:*`; the saved result is UIDs 4 and 6, sequence numbers 2 and 3.
struct Session;

impl Context for Session {
    fn changed_since(&self, since: u64) -> String {
        format!("UID {since}:*")
    }
}

fn refused(command: &[u8]) -> bool {
    take(command, &Session).is_err()
}

fn taken(command: &str) -> (String, Extras) {
    let (bytes, extras) = take(command.as_bytes(), &Session).expect("parses");
    (String::from_utf8(bytes.into_owned()).expect("utf8"), extras)
}

#[test]
fn plain_commands_pass_unchanged() {
    for c in [
        "a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)])\r\n",
        "a SELECT INBOX\r\n",
        "a LOGIN {5}\r\nalice {3}\r\npwd\r\n",
        "a UID SEARCH CHARSET UTF-8 TEXT {3}\r\n(x)\r\n",
    ] {
        assert_eq!(taken(c), (c.to_string(), Extras::default()));
    }
}

#[test]
fn condstore_and_qresync() {
    let (c, e) = taken("a SELECT INBOX (CONDSTORE)\r\n");
    assert_eq!(c, "a SELECT INBOX\r\n");
    assert_eq!(e.select, Some(SelectParams::CondStore));
    let (c, e) = taken("a EXAMINE \"x y\" (QRESYNC (67890007 20050715194045000 41,43:211))\r\n");
    assert_eq!(c, "a EXAMINE \"x y\"\r\n");
    assert_eq!(
        e.select,
        Some(SelectParams::Qresync {
            uid_validity: 67890007,
            modseq: 20050715194045000,
            known_uids: Some("41,43:211".into())
        })
    );
    let (c, e) = taken("a UID FETCH 1:* (FLAGS MODSEQ) (CHANGEDSINCE 12345 VANISHED)\r\n");
    assert_eq!(c, "a UID FETCH 1:* (FLAGS)\r\n");
    assert!(e.fetch_modseq && e.vanished && !e.fetch_uid_stand_in);
    assert_eq!(e.changed_since, Some(12345));
    let (c, e) = taken("a FETCH 1 MODSEQ\r\n");
    assert_eq!(c, "a FETCH 1 UID\r\n");
    assert!(e.fetch_modseq && e.fetch_uid_stand_in);
    let (c, _) = taken("a FETCH 1 (MODSEQ FLAGS)\r\n");
    assert_eq!(c, "a FETCH 1 (FLAGS)\r\n");
    let (c, e) = taken("a FETCH 1 (MODSEQ)\r\n");
    assert_eq!(c, "a FETCH 1 (UID)\r\n");
    assert!(e.fetch_uid_stand_in);
    let (c, e) = taken("a STORE 1:3 (UNCHANGEDSINCE 7) +FLAGS.SILENT (\\Seen)\r\n");
    assert_eq!(c, "a STORE 1:3 +FLAGS.SILENT (\\Seen)\r\n");
    assert_eq!(e.unchanged_since, Some(7));
    assert!(refused(b"a FETCH 1 FLAGS (VANISHED)\r\n"));
}

#[test]
fn esearch_modseq_and_sort() {
    let (c, e) = taken("a SEARCH RETURN (MIN COUNT) 1:3 MODSEQ \"/flags/\\\\seen\" all 5\r\n");
    assert_eq!(c, "a SEARCH 1:3 UID 5:*\r\n");
    assert_eq!(
        e.search_return,
        Some(vec![ReturnOption::Min, ReturnOption::Count])
    );
    assert!(e.search_modseq);
    let (c, e) = taken("a UID SORT (REVERSE DATE SUBJECT) UTF-8 SEEN\r\n");
    assert_eq!(c, "a UID SEARCH CHARSET UTF-8 SEEN\r\n");
    assert_eq!(
        e.sort,
        Some(vec![
            SortKey {
                reverse: true,
                kind: SortKind::Date
            },
            SortKey {
                reverse: false,
                kind: SortKind::Subject
            }
        ])
    );
    assert!(refused(b"a SORT () UTF-8 ALL\r\n"));
}

#[test]
fn list_extended() {
    let (c, e) = taken(
        "a LIST (SUBSCRIBED) \"\" (\"a/*\" b) RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n",
    );
    assert_eq!(c, "a LIST \"\" \"\"\r\n");
    assert_eq!(
        e.list,
        Some(ListExtras {
            selection: vec!["SUBSCRIBED".into()],
            patterns: vec!["a/*".into(), "b".into()],
            returns: vec!["CHILDREN".into()],
            status: vec!["MESSAGES".into(), "UNSEEN".into()],
        })
    );
    let (c, e) = taken("a LIST \"\" * RETURN ()\r\n");
    assert_eq!(c, "a LIST \"\" *\r\n");
    assert_eq!(e.list.map(|l| l.patterns), Some(vec!["*".to_string()]));
}

#[test]
fn binary_items() {
    let (c, e) = taken("a FETCH 1 (FLAGS BINARY.PEEK[1.2]<0.10> binary.size[])\r\n");
    assert_eq!(c, "a FETCH 1 (FLAGS)\r\n");
    assert_eq!(
        e.binary,
        [
            BinaryItem {
                size_only: false,
                peek: true,
                part: vec![1, 2],
                partial: Some((0, 10))
            },
            BinaryItem {
                size_only: true,
                peek: true,
                part: vec![],
                partial: None
            }
        ]
    );
    let (c, e) = taken("a UID FETCH 1 BINARY[]\r\n");
    assert_eq!(c, "a UID FETCH 1 UID\r\n");
    assert!(e.fetch_uid_stand_in && !e.binary[0].peek);
    for bad in [
        "BINARY[0]",
        "BINARY.SIZE[1]<0.1>",
        "BINARY.FOO[]",
        "BINARY[1]<x>",
    ] {
        let command = format!("a FETCH 1 ({bad})\r\n");
        assert!(refused(command.as_bytes()), "{bad}");
    }
}

#[test]
fn saved_results_stand_in_for_dollar() {
    let (c, e) = taken("a SEARCH RETURN (SAVE) SEEN\r\n");
    assert_eq!(c, "a SEARCH SEEN\r\n");
    assert_eq!(e.search_return, Some(vec![ReturnOption::Save]));
    let mark = sets::SAVED_MARK;
    assert_eq!(
        taken("a FETCH $ FLAGS\r\n").0,
        format!("a FETCH {mark} FLAGS\r\n")
    );
    assert_eq!(
        taken("a UID COPY $ Trash\r\n").0,
        format!("a UID COPY {mark} Trash\r\n")
    );
    // However many: each is a reference of fixed size, never the saved set's text.
    let many = format!("a UID SEARCH {}ALL\r\n", "$ ".repeat(30_000));
    let (c, _) = taken(&many);
    assert_eq!(c.len(), many.len() + 30_000 * (mark.len() - 1));
    // A client's own set that looks like the reference is turned around.
    let own = format!("a FETCH 1,{mark},7 FLAGS\r\n");
    assert_eq!(
        taken(&own).0,
        format!("a FETCH 1,{},7 FLAGS\r\n", sets::SAVED_MARK_FORWARD)
    );
}

#[test]
fn modseq_expansion_is_bounded() {
    struct Wide;
    impl Context for Wide {
        fn changed_since(&self, _: u64) -> String {
            format!("UID {}", "1,".repeat(5_000))
        }
    }
    let many = format!("a SEARCH {}ALL\r\n", "MODSEQ 1 ".repeat(1_000));
    assert!(matches!(
        take(many.as_bytes(), &Wide),
        Err(Refused::Limit(_))
    ));
    assert!(take(b"a SEARCH MODSEQ 1\r\n", &Wide).is_ok());
}

#[test]
fn create_special_use_parameters_are_taken_out() {
    let (c, e) = taken("a CREATE Sent2 (USE (\\Sent \\Archive))\r\n");
    assert_eq!(c, "a CREATE Sent2\r\n");
    assert_eq!(
        e.create_use,
        Some(vec!["\\Sent".to_string(), "\\Archive".into()])
    );
    assert_eq!(taken("a CREATE x\r\n").1.create_use, None);
    assert!(refused(b"a CREATE x (FOO (\\Sent))\r\n"));
    assert!(refused(b"a CREATE x (USE \\Sent)\r\n"));
    assert!(refused(b"a CREATE x (USE (\\Sent) extra)\r\n"));
}

#[test]
fn thread_is_a_search() {
    let (c, e) = taken("a UID THREAD REFERENCES UTF-8 SINCE 1-Feb-1994\r\n");
    assert_eq!(c, "a UID SEARCH CHARSET UTF-8 SINCE 1-Feb-1994\r\n");
    assert_eq!(e.thread, Some(ThreadAlgorithm::References));
    let (c, e) = taken("a THREAD orderedsubject US-ASCII ALL\r\n");
    assert_eq!(c, "a SEARCH CHARSET US-ASCII ALL\r\n");
    assert_eq!(e.thread, Some(ThreadAlgorithm::OrderedSubject));
    assert!(refused(b"a THREAD NEWEST UTF-8 ALL\r\n"));
}

#[test]
fn utf8_quoted_strings_become_literals() {
    let (c, _) = taken("a CREATE \"Entwürfe\"\r\n");
    assert_eq!(c, "a CREATE {9+}\r\nEntwürfe\r\n");
    let (c, e) = taken("a LIST \"\" (\"ü*\" x)\r\n");
    assert_eq!(c, "a LIST \"\" \"\"\r\n");
    assert_eq!(
        e.list.map(|l| l.patterns),
        Some(vec!["ü*".to_string(), "x".into()])
    );
}

#[test]
fn binary_append_data_is_taken_out() {
    let (c, e) = taken("a APPEND INBOX (\\Seen) ~{3}\r\na\0b\r\n");
    assert_eq!(c, "a APPEND INBOX (\\Seen) {1}\r\n.\r\n");
    assert_eq!(e.append_binary, Some(b"a\0b".to_vec()));
    let (c, e) = taken("a APPEND INBOX {3}\r\nabc\r\n");
    assert_eq!(
        (c.as_str(), e.append_binary),
        ("a APPEND INBOX {3}\r\nabc\r\n", None)
    );
}

#[test]
fn status_size_stands_in_for_imap_codec_and_the_rest_is_its_own() {
    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;
    let (c, e) = taken("a STATUS {5}\r\nIN BX (size deleted HIGHESTMODSEQ UIDNEXT)\r\n");
    assert_eq!(
        c,
        "a STATUS {5}\r\nIN BX (DELETED-STORAGE deleted HIGHESTMODSEQ UIDNEXT)\r\n"
    );
    assert_eq!(e, Extras::default());
    let (_, parsed) = imap_codec::CommandCodec::default()
        .decode(c.as_bytes())
        .expect("imap-codec reads it");
    let CommandBody::Status { item_names, .. } = parsed.body else {
        panic!("not a STATUS: {:?}", parsed.body);
    };
    assert_eq!(
        status_items(&item_names),
        ["SIZE", "DELETED", "HIGHESTMODSEQ", "UIDNEXT"]
    );
    // The stand-in itself, sent by a client, is not taken for SIZE.
    assert!(refused(b"a STATUS x (DELETED-STORAGE)\r\n"));
    assert!(refused(b"a STATUS x (\"SIZE\")\r\n"));
}

#[test]
fn damaged_input_is_an_error_not_a_panic() {
    for bad in [
        &b"a FETCH 1 (FLAGS\r\n"[..],
        b"a SEARCH \"open\r\n",
        b"a SELECT x {99999999999999999999}\r\n",
        b"a SELECT x {5}\r\nab",
        b"a LIST (",
        b"a SORT (DATE",
    ] {
        assert!(refused(bad), "{bad:?}");
    }
}
