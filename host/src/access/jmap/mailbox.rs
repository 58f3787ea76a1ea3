//! Mailbox/get, Mailbox/query, Mailbox/changes and Mailbox/set (RFC 8621 §2) over an
//! [`Account`]: one mailbox per Maildir folder, the hierarchy from the folder names.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value};

use super::account::{thread_of, Account, Found, MailboxRecord, ScanView};
use super::api::MethodError;
use super::budget::{self, Work};
use super::methods::{self, id_list, ids_argument, properties_argument, Call};
use crate::store::mailbox::{count_folders, folder_path, Folder};
use crate::sys::blocking;

const ALL_PROPERTIES: [&str; 11] = [
    "id",
    "name",
    "parentId",
    "role",
    "sortOrder",
    "totalEmails",
    "unreadEmails",
    "totalThreads",
    "unreadThreads",
    "myRights",
    "isSubscribed",
];

/// Where a role's mailbox sorts among the others (lower first); the rest by name after.
fn sort_order(mailbox: &MailboxRecord) -> u32 {
    match mailbox.role {
        Some("inbox") => 1,
        Some("drafts") => 2,
        Some("sent") => 3,
        Some("archive") => 4,
        Some("junk") => 5,
        Some("trash") => 6,
        _ => 10,
    }
}

/// Threads and unread threads per mailbox, over a snapshot: each email whose thread is not
/// known yet costs a parse, counted against the request's work (what is worked out is kept,
/// so a request that runs out leaves the next one less to do).
fn thread_counts(
    view: &ScanView,
    work: &Work,
    found: &mut Found,
) -> Result<HashMap<String, (usize, usize)>, MethodError> {
    let mut threads: HashMap<&str, (HashSet<String>, HashSet<String>)> = HashMap::new();
    for email in &view.emails {
        let thread = view
            .thread_within(email, work, found)?
            .unwrap_or_else(|| thread_of(&email.id, None));
        let entry = threads.entry(email.mailbox_id.as_str()).or_default();
        if !email.entry.flags.contains('S') {
            entry.1.insert(thread.clone());
        }
        entry.0.insert(thread);
    }
    Ok(threads
        .into_iter()
        .map(|(mailbox, (all, unread))| (mailbox.to_string(), (all.len(), unread.len())))
        .collect())
}

/// Mailbox/get: the mailboxes are copied under the account's lock; thread counts, which may
/// parse every message, are worked out on the blocking pool over a snapshot with the lock
/// released, within the request's work budget.
pub async fn get(
    account: &tokio::sync::Mutex<Account>,
    call: &Call<'_>,
) -> Result<Value, MethodError> {
    let properties = properties_argument(&call.args, "properties")?
        .unwrap_or_else(|| ALL_PROPERTIES.iter().map(|p| p.to_string()).collect());
    let ids = ids_argument(&call.args, call.limits.max_objects_in_get)?;
    let wants_threads = properties
        .iter()
        .any(|p| p == "totalThreads" || p == "unreadThreads");
    let (mailboxes, state, view) = {
        let account = account.lock().await;
        let view = wants_threads.then(|| account.scan_view());
        (
            account.mailboxes.clone(),
            account.mailbox_states.state(),
            view,
        )
    };
    let threads = match view {
        Some(view) => {
            let mut found = Found::default();
            let counts = blocking::run(|| thread_counts(&view, &call.budget.work, &mut found));
            if !found.is_empty() {
                account.lock().await.adopt(found);
            }
            counts?
        }
        None => HashMap::new(),
    };
    let ids = ids.unwrap_or_else(|| mailboxes.iter().map(|m| m.id.clone()).collect());
    // Each object is counted before it is built: as many properties as the client lists,
    // for each mailbox.
    let mut meter = super::budget::Meter::new(call.budget);
    let per_object = super::budget::PROPERTY_COST.saturating_mul(properties.len() as u64 + 1);
    let mut list = Vec::new();
    let mut not_found = Vec::new();
    for id in ids {
        meter.take(per_object)?;
        let Some(mailbox) = mailboxes.iter().find(|m| m.id == id) else {
            not_found.push(id);
            continue;
        };
        let (total_threads, unread_threads) = threads.get(&id).copied().unwrap_or_default();
        let mut out = Map::new();
        out.insert("id".into(), id.clone().into());
        for property in &properties {
            let value = match property.as_str() {
                "id" => continue,
                "name" => mailbox.short_name().into(),
                "parentId" => mailbox.parent_id.clone().into(),
                "role" => mailbox.role.into(),
                "sortOrder" => sort_order(mailbox).into(),
                "totalEmails" => mailbox.total.into(),
                "unreadEmails" => mailbox.unread.into(),
                "totalThreads" => total_threads.into(),
                "unreadThreads" => unread_threads.into(),
                "myRights" => rights(mailbox),
                "isSubscribed" => true.into(),
                _ => Value::Null,
            };
            out.insert(property.clone(), value);
        }
        list.push(Value::Object(out));
    }
    Ok(json!({
        "accountId": call.account_id,
        "state": state,
        "list": list,
        "notFound": not_found,
    }))
}

fn rights(mailbox: &MailboxRecord) -> Value {
    let inbox = mailbox.role == Some("inbox");
    json!({
        "mayReadItems": true, "mayAddItems": true, "mayRemoveItems": true,
        "maySetSeen": true, "maySetKeywords": true, "mayCreateChild": true,
        "mayRename": !inbox, "mayDelete": !inbox, "maySubmit": true,
    })
}

pub fn changes(account: &Account, call: &Call) -> Result<Value, MethodError> {
    let mut out = methods::changes(&account.mailbox_states, call)?;
    out.insert("updatedProperties".into(), Value::Null);
    Ok(Value::Object(out))
}

fn filter_matches(
    mailbox: &MailboxRecord,
    filter: &Map<String, Value>,
) -> Result<bool, MethodError> {
    for (name, value) in filter {
        let ok = match name.as_str() {
            "parentId" => mailbox.parent_id.as_deref() == value.as_str(),
            "name" => value.as_str().is_some_and(|n| {
                mailbox
                    .short_name()
                    .to_lowercase()
                    .contains(&n.to_lowercase())
            }),
            "role" => mailbox.role == value.as_str(),
            "hasAnyRole" => Some(mailbox.role.is_some()) == value.as_bool(),
            "isSubscribed" => value.as_bool() == Some(true),
            other => {
                return Err(MethodError::with(
                    "unsupportedFilter",
                    format!("Mailbox filter {other} is not supported"),
                ))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

pub fn query(account: &Account, call: &Call) -> Result<Value, MethodError> {
    let args = &call.args;
    let filter = match args.get("filter") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) if !map.contains_key("operator") => map.clone(),
        Some(_) => {
            return Err(MethodError::with(
                "unsupportedFilter",
                "Mailbox/query takes one filter condition",
            ))
        }
    };
    let mut found = Vec::new();
    for mailbox in &account.mailboxes {
        if filter_matches(mailbox, &filter)? {
            found.push(mailbox);
        }
    }
    let mut sorted = false;
    if let Some(sort) = args.get("sort").and_then(Value::as_array) {
        if sort.len() > super::query::MAX_SORT {
            return Err(super::budget::too_large(
                "maxSortComparators",
                format!(
                    "a sort lists at most {} comparators",
                    super::query::MAX_SORT
                ),
            ));
        }
        for comparator in sort.iter().rev() {
            let ascending = comparator
                .get("isAscending")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            match comparator.get("property").and_then(Value::as_str) {
                Some("name") => found.sort_by(|a, b| a.short_name().cmp(b.short_name())),
                Some("sortOrder") => found.sort_by_key(|m| sort_order(m)),
                other => {
                    return Err(MethodError::with(
                        "unsupportedSort",
                        format!("cannot sort mailboxes by {other:?}"),
                    ))
                }
            }
            if !ascending {
                found.reverse();
            }
            sorted = true;
        }
    }
    if !sorted {
        found.sort_by(|a, b| sort_order(a).cmp(&sort_order(b)).then(a.name.cmp(&b.name)));
    }
    let ids: Vec<String> = found.iter().map(|m| m.id.clone()).collect();
    let window = super::query::Window::read(args)?;
    let (position, page) = super::query::window(&ids, &window)?;
    let mut out = json!({
        "accountId": call.account_id,
        "queryState": account.mailbox_states.state(),
        "canCalculateChanges": false,
        "position": position,
        "ids": page,
    });
    if args.get("calculateTotal").and_then(Value::as_bool) == Some(true) {
        out["total"] = ids.len().into();
    }
    Ok(out)
}

fn set_error(kind: &str, description: impl Into<String>) -> Value {
    json!({"type": kind, "description": description.into()})
}

/// The folder name a mailbox called `name` under `parent` has.
fn full_name(
    account: &Account,
    name: &str,
    parent: Option<&str>,
    names: &HashMap<String, String>,
) -> Result<String, Value> {
    if name.is_empty() || name.contains('/') {
        return Err(set_error(
            "invalidProperties",
            "a name is not empty and holds no '/'",
        ));
    }
    let full = match parent {
        None => name.to_string(),
        Some(parent) => {
            let parent_name = account
                .mailbox(parent)
                .map(|m| m.name.clone())
                .or_else(|| names.get(parent).cloned())
                .ok_or_else(|| set_error("invalidProperties", format!("no parent {parent}")))?;
            format!("{parent_name}/{name}")
        }
    };
    folder_path(&account.maildir, &full).map_err(|e| set_error("invalidProperties", e.0))?;
    if account
        .mailboxes
        .iter()
        .any(|m| m.name.eq_ignore_ascii_case(&full))
    {
        return Err(set_error("alreadyExists", format!("{full} exists")));
    }
    Ok(full)
}

/// Creates one mailbox; its id.
fn create(
    account: &Account,
    object: &Map<String, Value>,
    created: &HashMap<String, String>,
    names: &HashMap<String, String>,
) -> Result<(String, String), Value> {
    let name = object.get("name").and_then(Value::as_str).unwrap_or("");
    let parent = match object.get("parentId") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(match id.strip_prefix('#') {
            Some(creation) => created.get(creation).cloned().unwrap_or_else(|| id.clone()),
            None => id.clone(),
        }),
        Some(_) => return Err(set_error("invalidProperties", "parentId is an id or null")),
    };
    for key in object.keys() {
        if !["name", "parentId", "isSubscribed", "sortOrder", "role"].contains(&key.as_str()) {
            return Err(set_error("invalidProperties", format!("cannot set {key}")));
        }
    }
    let full = full_name(account, name, parent.as_deref(), names)?;
    let maildir = account.maildir.clone();
    let validity =
        blocking::run(|| Folder::open_in(&maildir, &full).and_then(|f| f.uid_validity()))
            .map_err(|e| set_error("serverFail", e.to_string()))?;
    Ok((format!("F{validity}"), full))
}

/// Destroys one mailbox (and its messages when `remove_emails`).
/// `gone`: mailboxes this call destroyed already (children go before their parent).
fn destroy(account: &Account, id: &str, remove_emails: bool, gone: &[String]) -> Result<(), Value> {
    let mailbox = account
        .mailbox(id)
        .ok_or_else(|| set_error("notFound", "no such mailbox"))?;
    if mailbox.role == Some("inbox") {
        return Err(set_error("forbidden", "INBOX cannot be destroyed"));
    }
    let has_child = account
        .mailboxes
        .iter()
        .any(|m| m.parent_id.as_deref() == Some(id) && !gone.contains(&m.id));
    if has_child {
        return Err(set_error("mailboxHasChild", "destroy its children first"));
    }
    if mailbox.total > 0 && !remove_emails {
        return Err(set_error(
            "mailboxHasEmail",
            "it holds emails (onDestroyRemoveEmails)",
        ));
    }
    let path =
        folder_path(&account.maildir, &mailbox.name).map_err(|e| set_error("serverFail", e.0))?;
    if path == account.maildir {
        return Err(set_error("forbidden", "INBOX cannot be destroyed"));
    }
    blocking::run(|| std::fs::remove_dir_all(&path))
        .map_err(|e| set_error("serverFail", e.to_string()))
}

/// Renames one mailbox (a new name, or a new parent); only mailboxes without children.
fn update(account: &Account, id: &str, patch: &Map<String, Value>) -> Result<(), Value> {
    let mailbox = account
        .mailbox(id)
        .ok_or_else(|| set_error("notFound", "no such mailbox"))?;
    let mut name = mailbox.short_name().to_string();
    let mut parent = mailbox.parent_id.clone();
    for (key, value) in patch {
        match key.as_str() {
            "name" => name = value.as_str().unwrap_or("").to_string(),
            "parentId" => parent = value.as_str().map(str::to_string),
            "isSubscribed" if value == &Value::Bool(true) => {}
            _ => return Err(set_error("invalidProperties", format!("cannot set {key}"))),
        }
    }
    if name == mailbox.short_name() && parent == mailbox.parent_id {
        return Ok(());
    }
    if mailbox.role == Some("inbox") {
        return Err(set_error("forbidden", "INBOX cannot be renamed"));
    }
    if account
        .mailboxes
        .iter()
        .any(|m| m.parent_id.as_deref() == Some(id))
    {
        return Err(set_error(
            "forbidden",
            "mailboxes with children cannot be renamed here",
        ));
    }
    let full = full_name(account, &name, parent.as_deref(), &HashMap::new())?;
    let from =
        folder_path(&account.maildir, &mailbox.name).map_err(|e| set_error("serverFail", e.0))?;
    let to =
        folder_path(&account.maildir, &full).map_err(|e| set_error("invalidProperties", e.0))?;
    blocking::run(|| std::fs::rename(&from, &to))
        .map_err(|e| set_error("serverFail", e.to_string()))
}

/// Creates mailboxes in an order that lets one name another of the same call as its parent
/// (`"parentId": "#creation"`), whatever order the client gave them in.
/// The folders a Mailbox/set may still create.
struct Room {
    folders: usize,
    max_folders: usize,
}

impl Room {
    /// Takes one folder (counted against the request's work too), or refuses `overQuota`.
    fn take(&mut self, call: &Call) -> Result<(), Value> {
        charge(call)?;
        if self.folders == 0 {
            return Err(set_error(
                "overQuota",
                format!("at most {} folders per user", self.max_folders),
            ));
        }
        self.folders -= 1;
        Ok(())
    }
}

fn create_all(
    account: &Account,
    call: &Call,
    create_map: &Map<String, Value>,
    created_ids: &mut HashMap<String, String>,
    outcome: &mut SetOutcome,
    mut room: Room,
) {
    let mut names: HashMap<String, String> = HashMap::new();
    let mut waiting: Vec<(&String, &Value)> = create_map.iter().collect();
    loop {
        let before = waiting.len();
        waiting.retain(|(creation, object)| {
            let parent = object.get("parentId").and_then(Value::as_str);
            let waits = parent
                .and_then(|p| p.strip_prefix('#'))
                .is_some_and(|c| !created_ids.contains_key(c) && create_map.contains_key(c));
            if waits {
                return true;
            }
            let result = object
                .as_object()
                .ok_or_else(|| set_error("invalidProperties", "a mailbox is an object"))
                .and_then(|o| {
                    room.take(call)?;
                    create(account, o, created_ids, &names)
                });
            match result {
                Ok((id, name)) => {
                    created_ids.insert(creation.to_string(), id.clone());
                    names.insert(id.clone(), name);
                    outcome
                        .created
                        .insert(creation.to_string(), json!({"id": id}));
                }
                Err(e) => {
                    outcome.not_created.insert(creation.to_string(), e);
                }
            }
            false
        });
        if waiting.is_empty() || waiting.len() == before {
            break;
        }
    }
    for (creation, _) in waiting {
        // Parents that are never created (a loop of references).
        outcome.not_created.insert(
            creation.clone(),
            set_error("invalidProperties", "its parentId is never created"),
        );
    }
}

/// What Mailbox/set did, for the response.
pub struct SetOutcome {
    pub created: Map<String, Value>,
    pub not_created: Map<String, Value>,
    pub updated: Map<String, Value>,
    pub not_updated: Map<String, Value>,
    pub destroyed: Vec<String>,
    pub not_destroyed: Map<String, Value>,
}

/// Each change to a mailbox counts against the request's work and time
/// ([`budget::FOLDER_COST`]); one the budget refuses gets its `requestTooLarge` as SetError,
/// and so do the ones after it.
fn charge(call: &Call) -> Result<(), Value> {
    call.budget
        .work
        .add(budget::FOLDER_COST)
        .map_err(|e| e.to_value())
}

/// Mailbox/set; `max_folders` is the user's bound on folders (`limits.max-folders-per-user`).
pub fn set(
    account: &Account,
    call: &Call,
    created_ids: &mut HashMap<String, String>,
    max_folders: usize,
) -> Result<SetOutcome, MethodError> {
    let args = &call.args;
    let mut outcome = SetOutcome {
        created: Map::new(),
        not_created: Map::new(),
        updated: Map::new(),
        not_updated: Map::new(),
        destroyed: Vec::new(),
        not_destroyed: Map::new(),
    };
    if let Some(create_map) = args.get("create").and_then(Value::as_object) {
        let room = Room {
            folders: max_folders.saturating_sub(blocking::run(|| count_folders(&account.maildir))),
            max_folders,
        };
        create_all(account, call, create_map, created_ids, &mut outcome, room);
    }
    if let Some(updates) = args.get("update").and_then(Value::as_object) {
        for (id, patch) in updates {
            let result = patch
                .as_object()
                .ok_or_else(|| set_error("invalidPatch", "a patch is an object"))
                .and_then(|p| charge(call).and_then(|()| update(account, id, p)));
            match result {
                Ok(()) => {
                    outcome.updated.insert(id.clone(), Value::Null);
                }
                Err(e) => {
                    outcome.not_updated.insert(id.clone(), e);
                }
            }
        }
    }
    let remove_emails = args
        .get("onDestroyRemoveEmails")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for id in id_list(args, "destroy")? {
        let destroyed =
            charge(call).and_then(|()| destroy(account, &id, remove_emails, &outcome.destroyed));
        match destroyed {
            Ok(()) => outcome.destroyed.push(id),
            Err(e) => {
                outcome.not_destroyed.insert(id, e);
            }
        }
    }
    Ok(outcome)
}
