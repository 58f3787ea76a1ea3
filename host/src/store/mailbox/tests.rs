use super::*;
use crate::store::uidlist::FILE as UIDLIST;

#[test]
fn flags_are_a_set_of_letters_written_in_ascii_order() {
    let flags = Flags::parse("TSa,SF\\x");
    assert_eq!(flags.to_string(), "FSTax");
    assert!(flags.contains('S') && flags.contains('a') && !flags.contains('D'));
    assert_eq!(Flags::parse("").to_string(), "");
    let added = flags.union(Flags::parse("DS"));
    assert_eq!(added.to_string(), "DFSTax");
    assert_eq!(added.without(Flags::parse("Tx")).to_string(), "DFSa");
    assert!(!Flags::parse("S").contains('\\'));
}

fn deliver(folder: &Folder, name: &str, body: &[u8]) {
    // As another program would: by path.
    std::fs::write(folder.path.join("new").join(name), body).expect("write");
}

fn change<'a>(op: FlagOp, system: &str, keywords: &'a [String]) -> FlagChange<'a> {
    FlagChange {
        op,
        system: Flags::parse(system),
        keywords,
        unchanged_since: None,
    }
}

#[test]
fn append_all_adds_every_message_with_its_flags_and_leaves_tmp_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = Folder::open(dir.path()).expect("open");
    folder
        .append(b"first", Flags::parse(""), &[], None)
        .expect("append");
    let work = ["Work".to_string()];
    let messages = [
        NewMessage {
            bytes: b"a\nb",
            system: Flags::parse("S"),
            keywords: &[],
            internal_date: Some(1_600_000_000),
        },
        NewMessage {
            bytes: b"c",
            system: Flags::parse("F"),
            keywords: &work,
            internal_date: None,
        },
    ];
    assert_eq!(folder.append_all(&messages).expect("append all"), [2, 3]);
    let snapshot = folder.scan(false).expect("scan");
    let summary: Vec<(u32, String, u64)> = snapshot
        .entries
        .iter()
        .map(|e| (e.uid, e.flags.system().to_string(), e.size))
        .collect();
    assert_eq!(
        summary,
        [
            (1, String::new(), 5),
            (2, "S".to_string(), 4),
            (3, "F".to_string(), 1)
        ]
    );
    assert_eq!(snapshot.entries[1].internal_date, 1_600_000_000);
    assert!(snapshot.entries[2].flags.keyword_letters().count() == 1);
    assert_eq!(folder.read(&snapshot.entries[1]).expect("read"), b"a\r\nb");
    let tmp = std::fs::read_dir(dir.path().join("tmp"))
        .expect("tmp")
        .count();
    assert_eq!(tmp, 0);
}

#[test]
fn uids_survive_rescans_flag_changes_and_deletions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = Folder::open(dir.path()).expect("open");
    deliver(&folder, "100.a.mailgate", b"one");
    deliver(&folder, "200.b.mailgate", b"two");
    let first = folder.scan(true).expect("scan");
    assert_eq!(
        first.entries.iter().map(|e| e.uid).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(first
        .entries
        .iter()
        .all(|e| e.recent && !e.in_new && folder.path.join(folder.path_of(e)).exists()));
    folder
        .update_flags(&[&first.entries[0]], &change(FlagOp::Replace, "SF", &[]))
        .expect("flags");
    folder.delete(&first.entries[1]).expect("delete");
    deliver(&folder, "300.c.mailgate", b"three");
    let reopened = Folder::open(dir.path()).expect("reopen");
    let second = reopened.scan(false).expect("scan");
    assert_eq!(second.uid_validity, first.uid_validity);
    let summary: Vec<(u32, String, bool)> = second
        .entries
        .iter()
        .map(|e| (e.uid, e.flags.to_string(), e.recent))
        .collect();
    assert_eq!(
        summary,
        [(1, "FS".to_string(), false), (3, String::new(), true)]
    );
    assert_eq!(second.uid_next, 4);
    assert!(second.highest_modseq > first.highest_modseq);
    assert_eq!(reopened.read(&second.entries[0]).expect("read"), b"one");
    let uid = reopened
        .append(b"four", Flags::parse("S"), &[], Some(1_000_000))
        .expect("append");
    assert_eq!(uid, 4);
    let third = reopened.scan(false).expect("scan");
    assert_eq!(third.entries.last().map(|e| e.uid), Some(4));
}

#[test]
fn flag_changes_apply_to_the_current_flags_not_a_stale_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = Folder::open(dir.path()).expect("open");
    deliver(&folder, "100.a.mailgate", b"one");
    let seen = folder.scan(true).expect("scan").entries;
    let seen = folder.mark_seen(&seen[0]).expect("seen").expect("there");
    // Session B took its copy now: \Seen.
    let stale = seen.clone();
    // Session A adds \Answered.
    let a = folder
        .update_flags(&[&seen], &change(FlagOp::Add, "R", &[]))
        .expect("a");
    assert_eq!(a.entries[0].flags.to_string(), "RS");
    // Session B removes \Seen from its stale copy: A's \Answered stays.
    let b = folder
        .update_flags(&[&stale], &change(FlagOp::Remove, "S", &[]))
        .expect("b");
    assert_eq!(b.entries[0].flags.to_string(), "R");
    assert!(b.entries[0].modseq > a.entries[0].modseq);
    let now = folder.scan(false).expect("scan").entries;
    assert_eq!(now[0].flags.to_string(), "R");
    assert_eq!(now[0].modseq, b.entries[0].modseq);
    // UNCHANGEDSINCE older than the last change leaves the message alone.
    let mut guarded = change(FlagOp::Add, "F", &[]);
    guarded.unchanged_since = Some(a.entries[0].modseq);
    let refused = folder.update_flags(&[&now[0]], &guarded).expect("c");
    assert_eq!(refused.modified, [now[0].uid]);
    assert_eq!(refused.entries[0].flags.to_string(), "R");
    // A message expunged meanwhile is left out.
    folder.delete(&now[0]).expect("delete");
    let gone = folder
        .update_flags(&[&now[0]], &change(FlagOp::Add, "F", &[]))
        .expect("gone");
    assert!(gone.entries.is_empty());
}

#[test]
fn keywords_are_dovecot_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = Folder::open(dir.path()).expect("open");
    // Dovecot's own: keyword 0 is $Forwarded, on a message as letter a.
    std::fs::write(folder.path.join("dovecot-keywords"), "0 $Forwarded\n").expect("kw");
    std::fs::write(folder.path.join("cur/100.x.host:2,Sa"), b"x").expect("msg");
    let snap = folder.scan(false).expect("scan");
    assert_eq!(snap.keywords.name('a'), Some("$Forwarded"));
    let names = ["$Junk".to_string(), "$forwarded".to_string()];
    let update = folder
        .update_flags(&[&snap.entries[0]], &change(FlagOp::Add, "", &names))
        .expect("store");
    assert_eq!(update.entries[0].flags.to_string(), "Sab");
    assert_eq!(update.keywords.name('b'), Some("$Junk"));
    assert_eq!(
        std::fs::read_to_string(folder.path.join("dovecot-keywords")).expect("read"),
        "0 $Forwarded\n1 $Junk\n"
    );
    assert!(folder.path.join("cur/100.x.host:2,Sab").exists());
    let uid = folder
        .append(b"y", Flags::parse("F"), &["Work".to_string()], None)
        .expect("append");
    let snap = folder.scan(false).expect("scan");
    let appended = snap.entries.iter().find(|e| e.uid == uid).expect("found");
    assert_eq!(appended.flags.to_string(), "Fc");
    assert_eq!(snap.keywords.name('c'), Some("Work"));
}

#[test]
fn files_another_program_renamed_are_found_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = Folder::open(dir.path()).expect("open");
    deliver(&folder, "100.a.mailgate", b"one");
    deliver(&folder, "200.b.mailgate", b"two");
    let stale = folder.scan(true).expect("scan").entries;
    // Dovecot (or mutt) marks both \Seen: the files have other names now.
    for key in ["100.a.mailgate", "200.b.mailgate"] {
        std::fs::rename(
            folder.path.join(format!("cur/{key}:2,")),
            folder.path.join(format!("cur/{key}:2,S")),
        )
        .expect("rename");
    }
    let update = folder
        .update_flags(&[&stale[0]], &change(FlagOp::Add, "F", &[]))
        .expect("store");
    assert_eq!(update.entries[0].flags.to_string(), "FS");
    assert!(folder.path.join("cur/100.a.mailgate:2,FS").exists());
    assert_eq!(folder.read(&stale[1]).expect("read"), b"two");
    folder.delete(&stale[1]).expect("delete");
    assert!(!folder.path.join("cur/200.b.mailgate:2,S").exists());
    // Gone is gone: nothing to change, nothing to delete, nothing to read.
    let gone = folder
        .update_flags(&[&stale[1]], &change(FlagOp::Add, "F", &[]))
        .expect("store");
    assert!(gone.entries.is_empty());
    folder.delete(&stale[1]).expect("delete again");
    let err = folder.read(&stale[1]).expect_err("gone");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn a_27th_keyword_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = Folder::open(dir.path()).expect("open");
    deliver(&folder, "100.a.mailgate", b"one");
    let entry = folder.scan(true).expect("scan").entries.remove(0);
    let full: Vec<String> = (0..26).map(|i| format!("k{i}")).collect();
    folder
        .update_flags(&[&entry], &change(FlagOp::Add, "", &full))
        .expect("26 fit");
    let entry = folder.scan(false).expect("scan").entries.remove(0);
    let more = ["k3".to_string(), "k26".to_string()];
    let err = folder
        .update_flags(&[&entry], &change(FlagOp::Add, "F", &more))
        .expect_err("27th");
    assert!(keywords::is_limit(&err), "{err}");
    let after = folder.scan(false).expect("scan").entries.remove(0);
    assert_eq!(after.flags, entry.flags);
    let err = folder
        .append(b"x", Flags::default(), &more, None)
        .expect_err("27th");
    assert!(keywords::is_limit(&err), "{err}");
    // Known ones are still fine.
    folder
        .update_flags(&[&after], &change(FlagOp::Remove, "", &more))
        .expect("remove");
}

#[test]
fn lf_files_are_served_as_crlf_with_matching_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = Folder::open(dir.path()).expect("open");
    let lf = b"Subject: hi\n\nline one\r\nline two\n";
    deliver(&folder, "100.lf.host", lf);
    // Dovecot's W= is taken as given.
    deliver(&folder, "200.w.host,S=5,W=7", b"a\nb\nc");
    let snap = folder.scan(true).expect("scan");
    let served = folder.read(&snap.entries[0]).expect("read");
    assert_eq!(served, b"Subject: hi\r\n\r\nline one\r\nline two\r\n");
    assert_eq!(snap.entries[0].size, served.len() as u64);
    assert_eq!(snap.entries[1].size, 7);
    assert_eq!(folder.read(&snap.entries[1]).expect("read"), b"a\r\nb\r\nc");
    // Sizes are learnt once and kept in the index.
    let index = std::fs::read_to_string(folder.path.join(UIDLIST)).expect("index");
    assert!(
        index.contains(&format!(" {} - 100.lf.host\n", served.len())),
        "{index}"
    );
}

#[test]
fn a_recreated_folder_gets_a_new_uidvalidity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seen = HashSet::new();
    for _ in 0..3 {
        let folder = Folder::open_in(dir.path(), "Work").expect("open");
        assert!(seen.insert(folder.uid_validity().expect("validity")));
        std::fs::remove_dir_all(&folder.path).expect("delete");
    }
}

#[test]
fn mailbox_names_stay_inside() {
    let root = Path::new("/mail/u");
    assert_eq!(folder_path(root, "inbox").expect("inbox"), root);
    assert_eq!(
        folder_path(root, "Work/Projects").expect("sub"),
        root.join(".Work.Projects")
    );
    for bad in [
        "..", "../x", "a/../b", "/etc", "a//b", "a\0b", "a\nb", "a.b", "",
    ] {
        assert!(folder_path(root, bad).is_err(), "{bad:?}");
    }
}

#[test]
fn folders_open_beneath_the_maildir_handle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let maildir = dir.path().join("alice");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("cur")).expect("outside");
    let sub = Folder::open_in(&maildir, "Work/Projects").expect("open");
    assert!(maildir.join(".Work.Projects/cur").is_dir());
    sub.append(b"x", Flags::default(), &[], None)
        .expect("append");
    // A folder that is a link out of the Maildir is not followed, whatever its name.
    std::os::unix::fs::symlink(&outside, maildir.join(".Evil")).expect("link");
    assert!(Folder::open_in(&maildir, "Evil").is_err());
    assert!(Folder::open_in(&maildir, "../outside").is_err());
    assert!(Folder::open_in(&maildir, "INBOX").is_ok());
}

/// Sets the times of the folder's `cur/` and `new/` to `ago` in the past.
fn age_directories(folder: &Folder, ago: std::time::Duration) {
    let then = std::time::SystemTime::now() - ago;
    for sub in ["cur", "new"] {
        let dir = std::fs::File::open(folder.path.join(sub)).expect("open");
        dir.set_modified(then).expect("set mtime");
    }
}

#[test]
fn a_settled_folder_is_answered_from_memory_and_any_change_is_seen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = Folder::open(dir.path()).expect("open");
    for i in 0..3 {
        deliver(
            &folder,
            &format!("100{i}.M{i}.elsewhere"),
            b"Subject: x\n\nbody\n",
        );
    }
    assert_eq!(folder.scan(true).expect("scan").entries.len(), 3);
    age_directories(&folder, std::time::Duration::from_secs(60));
    let settled = folder.scan(false).expect("scan");
    let cur = folder.path.join("cur");
    let first = cur.join(format!("{}:2,", settled.entries[0].key));
    let again = folder.scan(false).expect("scan");
    assert_eq!(again.entries, settled.entries);

    // A rename another program makes (a flag change) changes `cur/`'s time: seen.
    let second = &settled.entries[1];
    std::fs::rename(
        cur.join(format!("{}:2,", second.key)),
        cur.join(format!("{}:2,FS", second.key)),
    )
    .expect("rename");
    let now = folder.scan(false).expect("scan");
    assert_eq!(now.entries[1].flags.to_string(), "FS");
    assert!(now.entries[1].modseq > second.modseq);
    assert!(now.highest_modseq > settled.highest_modseq);

    // A file added, and one removed, each just after the folder settled.
    age_directories(&folder, std::time::Duration::from_secs(60));
    folder.scan(false).expect("scan");
    deliver(&folder, "2000.M9.elsewhere", b"Subject: y\n\nnew\n");
    let now = folder.scan(false).expect("scan");
    let uids: Vec<u32> = now.entries.iter().map(|e| e.uid).collect();
    assert_eq!(uids, [1, 2, 3, 4]);
    assert!(now.entries[3].recent && now.entries[3].in_new);
    age_directories(&folder, std::time::Duration::from_secs(60));
    folder.scan(false).expect("scan");
    std::fs::remove_file(&first).expect("remove");
    let now = folder.scan(false).expect("scan");
    let uids: Vec<u32> = now.entries.iter().map(|e| e.uid).collect();
    assert_eq!(uids, [2, 3, 4]);
    // A read-write scan still claims what is recent, and the next one sees it claimed.
    assert!(folder.scan(true).expect("claim").entries[2].recent);
    let after = folder.scan(true).expect("scan");
    assert!(after.entries.iter().all(|e| !e.recent && !e.in_new));
}

#[test]
fn internal_dates_come_back_from_the_cache_file_and_a_damaged_one_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = Folder::open(dir.path()).expect("open");
    deliver(&folder, "100.M1.elsewhere", b"Subject: x\n\nbody\n");
    let file = folder.path.join("new/100.M1.elsewhere");
    std::fs::File::options()
        .write(true)
        .open(&file)
        .expect("open")
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000))
        .expect("mtime");
    let first = folder.scan(false).expect("scan");
    assert_eq!(first.entries[0].internal_date, 1_500_000_000);
    let cache = folder.path.join(super::cache::FILE);
    let written = std::fs::read(&cache).expect("cache written");
    assert!(written.starts_with(b"MGCACHE1") && written.len() > 8);
    for damage in [
        &b""[..],
        b"MGCACHE1\x05\x00",
        b"garbage, not a cache at all",
    ] {
        std::fs::write(&cache, damage).expect("damage");
        // A new process (a new memory) reads the damaged file: the date is read again from
        // the message, and the cache holds it again.
        super::memo::forget_all();
        let again = folder.scan(false).expect("scan");
        assert_eq!(again.entries[0].internal_date, 1_500_000_000);
        let rebuilt = std::fs::read(&cache).expect("cache");
        assert_eq!(rebuilt, written, "rebuilt after {damage:?}");
    }
}
