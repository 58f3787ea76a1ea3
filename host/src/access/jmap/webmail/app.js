// mailgate webmail: a small client that speaks JMAP only (RFC 8620, RFC 8621). Everything a
// message brings is put on the page as text; its HTML comes sanitised by the server and is
// shown in a sandboxed frame loaded by a ticket (so it has its own, strict policy), whose
// links open in new tabs and whose remote images load only when the reader asks.
"use strict";

const USING = [
  "urn:ietf:params:jmap:core",
  "urn:ietf:params:jmap:mail",
  "urn:ietf:params:jmap:submission",
];
const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem("mailgate-token"),
  user: sessionStorage.getItem("mailgate-user"),
  accountId: sessionStorage.getItem("mailgate-account"),
  mailboxes: [],
  mailboxId: null,
  search: "",
  // The list as shown (ids in order) and the one the keyboard is on.
  listed: [],
  cursor: -1,
  email: null,
  // The composer: what it answers or forwards, the draft it was saved as.
  replyTo: null,
  forwarded: [],
  draftId: null,
  push: null,
};

function status(text) {
  $("status").textContent = text;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- Session ----------------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  const user = $("login-user").value.trim();
  const password = $("login-password").value;
  // The form goes as JSON for a bearer token: the browser never holds Basic credentials
  // that another site's page could make it send.
  const response = await fetch("/jmap/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username: user, password }),
  });
  if (!response.ok) {
    $("login-error").textContent = response.status === 401 ? "Wrong address or password" : "Cannot log in now";
    return;
  }
  const answer = await response.json();
  state.token = answer.token;
  state.user = answer.username;
  state.accountId = answer.accountId;
  sessionStorage.setItem("mailgate-token", state.token);
  sessionStorage.setItem("mailgate-user", state.user);
  sessionStorage.setItem("mailgate-account", state.accountId);
  await start();
}

async function logout() {
  if (state.push) {
    state.push.abort();
  }
  await fetch("/jmap/token", { method: "DELETE", headers: auth() });
  sessionStorage.clear();
  location.reload();
}

function auth() {
  return { Authorization: "Bearer " + state.token };
}

// One JMAP request; the method responses, or an exception with the first error.
async function api(calls) {
  const response = await fetch("/jmap/api/", {
    method: "POST",
    headers: Object.assign({ "Content-Type": "application/json" }, auth()),
    body: JSON.stringify({ using: USING, methodCalls: calls }),
  });
  if (response.status === 401) {
    sessionStorage.clear();
    location.reload();
  }
  if (!response.ok) {
    throw new Error("request refused: " + response.status);
  }
  const answer = await response.json();
  for (const [name, args] of answer.methodResponses) {
    if (name === "error") {
      throw new Error(args.type + (args.description ? ": " + args.description : ""));
    }
  }
  return answer.methodResponses;
}

// ---- Push: the server's event source (RFC 8620 §7.3) --------------------------------------
// Read with fetch rather than an EventSource object, which cannot send the bearer token.
// Each `state` event refreshes the folders and the list; the stream is opened again after
// a pause when it ends.

async function listen() {
  let pause = 1000;
  while (state.token) {
    state.push = new AbortController();
    try {
      const response = await fetch("/jmap/eventsource?types=Email,Mailbox&closeafter=no&ping=30", {
        headers: auth(), cache: "no-store", signal: state.push.signal,
      });
      if (response.status === 401) {
        return;
      }
      if (response.ok && response.body) {
        pause = 1000;
        await readEvents(response.body.pipeThrough(new TextDecoderStream()).getReader());
      }
    } catch (error) {
      if (error.name === "AbortError") {
        return;
      }
    }
    await sleep(pause);
    pause = Math.min(pause * 2, 60000);
  }
}

async function readEvents(reader) {
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      return;
    }
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (/^event: state$/m.test(event)) {
        refreshSoon();
      }
    }
  }
}

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => refresh().catch((e) => status(e.message)), 200);
}

// ---- Folders and the list -------------------------------------------------------------

function role(name) {
  return state.mailboxes.find((m) => m.role === name);
}

async function loadMailboxes() {
  const [[, result]] = await api([["Mailbox/get", { accountId: state.accountId }, "m"]]);
  state.mailboxes = result.list.sort((a, b) => a.sortOrder - b.sortOrder || a.name.localeCompare(b.name));
  const list = $("mailboxes");
  list.replaceChildren();
  // The folder menu is rebuilt only when the folders change (a refresh by push leaves an
  // open menu alone).
  const select = $("move-select");
  const names = state.mailboxes.map((m) => m.id + "/" + m.name).join("\n");
  const rebuild = select.dataset.names !== names;
  if (rebuild) {
    select.replaceChildren();
    select.dataset.names = names;
  }
  for (const mailbox of state.mailboxes) {
    const item = document.createElement("li");
    item.dataset.id = mailbox.id;
    item.dataset.role = mailbox.role || "";
    item.textContent = mailbox.name + (mailbox.unreadEmails ? " (" + mailbox.unreadEmails + ")" : "");
    item.classList.toggle("current", !state.search && mailbox.id === state.mailboxId);
    item.addEventListener("click", () => openMailbox(mailbox.id));
    list.append(item);
    if (rebuild) {
      const option = document.createElement("option");
      option.value = mailbox.id;
      option.textContent = mailbox.name;
      select.append(option);
    }
  }
}

function addresses(list) {
  return (list || []).map((a) => (a.name ? a.name + " <" + a.email + ">" : a.email)).join(", ");
}

function shortDate(iso) {
  const date = new Date(iso);
  const today = new Date();
  return date.toDateString() === today.toDateString()
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { day: "numeric", month: "short" });
}

async function openMailbox(id) {
  state.mailboxId = id;
  state.search = "";
  $("search-box").value = "";
  state.cursor = -1;
  for (const item of $("mailboxes").children) {
    item.classList.toggle("current", item.dataset.id === id);
  }
  showList();
  await loadMessages(true);
}

async function search(event) {
  event.preventDefault();
  state.search = $("search-box").value.trim();
  state.cursor = -1;
  for (const item of $("mailboxes").children) {
    item.classList.toggle("current", !state.search && item.dataset.id === state.mailboxId);
  }
  showList();
  await loadMessages(true);
}

// The list of the folder or search; `announce` says how many in the status line (a refresh
// leaves the status line to the last action).
async function loadMessages(announce) {
  // A search looks in every folder, as a mail client's search box does.
  const filter = state.search ? { text: state.search } : { inMailbox: state.mailboxId };
  const responses = await api([
    ["Email/query", { accountId: state.accountId, filter,
      sort: [{ property: "receivedAt", isAscending: false }], limit: 200 }, "q"],
    ["Email/get", { accountId: state.accountId, "#ids": { resultOf: "q", name: "Email/query", path: "/ids" },
      properties: ["subject", "from", "receivedAt", "keywords", "preview", "hasAttachment", "mailboxIds"] }, "g"],
  ]);
  const emails = responses[1][1].list;
  const current = state.cursor >= 0 ? state.listed[state.cursor] : null;
  const list = $("messages");
  list.replaceChildren();
  state.listed = emails.map((e) => e.id);
  for (const email of emails) {
    list.append(listItem(email));
  }
  // The keyboard stays on its message, or on the one that took its place.
  const kept = state.listed.indexOf(current);
  state.cursor = kept >= 0 ? kept : Math.min(state.cursor, state.listed.length - 1);
  markCursor();
  if (announce) {
    status(state.search
      ? emails.length + " found for “" + state.search + "”"
      : emails.length + " message(s)");
  }
}

function listItem(email) {
  const item = document.createElement("li");
  item.dataset.id = email.id;
  item.classList.toggle("unread", !email.keywords.$seen);
  item.classList.toggle("current", !!state.email && state.email.id === email.id);
  const line = document.createElement("span");
  line.className = "line";
  const from = document.createElement("span");
  from.className = "from";
  from.textContent = (email.from || []).map((a) => a.name || a.email).join(", ") || "(no sender)";
  const date = document.createElement("time");
  date.className = "date";
  date.textContent = shortDate(email.receivedAt);
  line.append(from, date);
  const subject = document.createElement("span");
  subject.className = "subject";
  subject.textContent = (email.hasAttachment ? "📎 " : "") + (email.subject || "(no subject)");
  const preview = document.createElement("span");
  preview.className = "preview";
  preview.textContent = email.preview;
  item.append(line, subject, preview);
  item.addEventListener("click", () => {
    state.cursor = state.listed.indexOf(email.id);
    openEmail(email.id).catch((e) => status(e.message));
  });
  return item;
}

function markCursor() {
  const items = $("messages").children;
  for (let i = 0; i < items.length; i++) {
    items[i].classList.toggle("cursor", i === state.cursor);
  }
  const item = items[state.cursor];
  if (item) {
    item.scrollIntoView({ block: "nearest" });
  }
}

// ---- Reading ----------------------------------------------------------------------------

// The text rendering of an email's textBody (what replies and forwards quote). Where a part
// is HTML (a message with no text form), its words laid out as lines: parsed into an inert
// document (no script runs, nothing loads).
function textOf(email) {
  return (email.textBody || []).map((part) => {
    const value = (email.bodyValues[part.partId] || {}).value || "";
    return part.type === "text/html" ? htmlText(value) : value;
  }).join("\n").replace(/\r\n/g, "\n").replace(/\s+$/, "");
}

const BLOCKS = new Set(["P", "DIV", "H1", "H2", "H3", "H4", "H5", "H6", "LI", "TR", "TABLE", "UL", "OL",
  "BLOCKQUOTE", "PRE", "SECTION", "ARTICLE", "HEADER", "FOOTER", "HR", "DL", "DT", "DD"]);
const SILENT = new Set(["SCRIPT", "STYLE", "HEAD", "TITLE", "TEMPLATE"]);

function htmlText(html) {
  const body = new DOMParser().parseFromString(html, "text/html").body;
  const out = [];
  // An explicit stack: a message's nesting cannot overflow the page's.
  const stack = [body];
  while (stack.length) {
    const node = stack.pop();
    if (typeof node === "string") {
      out.push(node);
    } else if (node.nodeType === Node.TEXT_NODE) {
      out.push(node.data.replace(/\s+/g, " "));
    } else if (node.nodeType === Node.ELEMENT_NODE && !SILENT.has(node.tagName)) {
      if (node.tagName === "BR") {
        out.push("\n");
        continue;
      }
      const block = BLOCKS.has(node.tagName);
      if (block) {
        out.push("\n");
        stack.push("\n");
      }
      if (node.tagName === "LI") {
        out.push("- ");
      }
      for (let i = node.childNodes.length - 1; i >= 0; i--) {
        stack.push(node.childNodes[i]);
      }
    }
  }
  return out.join("").split("\n").map((line) => line.trim()).join("\n").replace(/\n{3,}/g, "\n\n").trim();
}

function imagesAlways() {
  try {
    return JSON.parse(localStorage.getItem("mailgate-images-always:" + state.user) || "[]");
  } catch (_) {
    return [];
  }
}

function senderOf(email) {
  return ((email.from || [])[0] || {}).email || "";
}

async function openEmail(id) {
  const [[, result]] = await api([["Email/get", { accountId: state.accountId, ids: [id],
    properties: ["subject", "from", "to", "cc", "replyTo", "receivedAt", "sentAt", "keywords", "mailboxIds",
      "messageId", "references", "textBody", "htmlBody", "attachments", "bodyValues"],
    fetchTextBodyValues: true }, "e"]]);
  const email = result.list[0];
  if (!email) {
    status("That message is gone");
    return;
  }
  const drafts = role("drafts");
  if (email.keywords.$draft && drafts && email.mailboxIds[drafts.id]) {
    editDraft(email);
    return;
  }
  state.email = email;
  for (const item of $("messages").children) {
    item.classList.toggle("current", item.dataset.id === id);
  }
  $("composer").hidden = true;
  $("reader").hidden = false;
  $("mail-view").classList.add("reading");
  $("message-subject").textContent = email.subject || "(no subject)";
  $("message-from").textContent = "From: " + addresses(email.from);
  $("message-to").textContent = "To: " + addresses(email.to) + (email.cc ? "; Cc: " + addresses(email.cc) : "");
  $("message-date").textContent = new Date(email.receivedAt).toLocaleString();
  const html = (email.htmlBody || []).some((part) => part.type === "text/html");
  if (html) {
    await showHtml(email, imagesAlways().includes(senderOf(email).toLowerCase()));
  } else {
    $("images-bar").hidden = true;
    $("message-text").textContent = textOf(email);
    $("message-text").hidden = false;
    $("message-html").hidden = true;
    $("message-html").removeAttribute("src");
  }
  showAttachments(email);
  if (!email.keywords.$seen) {
    await setKeyword(email.id, "$seen", true);
  }
}

// The message's HTML in the frame, by a ticket for the sanitised document (remote images
// kept when `images`); the bar offers to show them when there are some and they are not.
async function showHtml(email, images) {
  const response = await fetch("/webmail/view/" + encodeURIComponent(email.id) + (images ? "?images=1" : ""),
    { headers: auth() });
  const frame = $("message-html");
  if (!response.ok) {
    status("Cannot show this message");
    return;
  }
  const view = await response.json();
  if (state.email !== email) {
    return;
  }
  frame.src = view.frame;
  frame.hidden = false;
  $("message-text").hidden = true;
  const bar = $("images-bar");
  bar.hidden = images || view.remoteImages === 0;
  $("images-count").textContent = view.remoteImages === 1
    ? "This message has a remote image, not loaded to protect your privacy."
    : "This message has " + view.remoteImages + " remote images, not loaded to protect your privacy.";
  $("images-sender").textContent = senderOf(email);
}

async function showImages(always) {
  const email = state.email;
  if (always) {
    const list = imagesAlways();
    const sender = senderOf(email).toLowerCase();
    if (sender && !list.includes(sender)) {
      list.push(sender);
      localStorage.setItem("mailgate-images-always:" + state.user, JSON.stringify(list));
    }
  }
  await showHtml(email, true);
}

function showAttachments(email) {
  const attachments = $("message-attachments");
  attachments.replaceChildren();
  for (const part of email.attachments || []) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "attachment";
    button.textContent = "⬇ " + (part.name || "attachment") + " (" + part.size + " bytes)";
    button.addEventListener("click", () => download(part));
    item.append(button);
    attachments.append(item);
  }
}

function showList() {
  $("mail-view").classList.remove("reading");
}

function closeReader() {
  $("reader").hidden = true;
  $("message-html").removeAttribute("src");
  state.email = null;
  showList();
}

async function setKeyword(id, keyword, on) {
  await api([["Email/set", { accountId: state.accountId, update: { [id]: { ["keywords/" + keyword]: on ? true : null } } }, "k"]]);
  await refresh();
}

async function download(part) {
  const url = "/jmap/download/" + state.accountId + "/" + part.blobId + "/" +
    encodeURIComponent(part.name || "attachment") + "?accept=" + encodeURIComponent(part.type);
  const response = await fetch(url, { headers: auth() });
  if (!response.ok) {
    status("Cannot download " + (part.name || "the attachment"));
    return;
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = part.name || "attachment";
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}

async function moveTo(mailboxId, done) {
  const email = state.email;
  if (email.mailboxIds[mailboxId]) {
    return;
  }
  await api([["Email/set", { accountId: state.accountId, update: { [email.id]: { mailboxIds: { [mailboxId]: true } } } }, "mv"]]);
  closeReader();
  await refresh();
  status(done || "Moved");
  await openNext();
}

// After a message left the list: the one that took its place, as the keyboard left it.
async function openNext() {
  const next = state.listed[state.cursor];
  if (next && window.matchMedia("(min-width: 761px)").matches) {
    await openEmail(next);
  }
}

async function archive() {
  const folder = role("archive");
  if (!folder) {
    status("There is no Archive folder");
    return;
  }
  await moveTo(folder.id, "Archived");
}

async function remove() {
  const trash = role("trash");
  const email = state.email;
  if (trash && !email.mailboxIds[trash.id]) {
    await moveTo(trash.id);
    return;
  }
  await api([["Email/set", { accountId: state.accountId, destroy: [email.id] }, "d"]]);
  closeReader();
  await refresh();
  status("Deleted");
  await openNext();
}

// ---- Writing ----------------------------------------------------------------------------

function when(email) {
  return new Date(email.sentAt || email.receivedAt).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

function quoted(email) {
  const attribution = "On " + when(email) + ", " + addresses(email.from) + " wrote:";
  return attribution + "\n" + textOf(email).split("\n").map((line) => (line ? "> " + line : ">")).join("\n");
}

function withPrefix(prefix, subject) {
  const re = new RegExp("^" + prefix + ":", "i");
  return re.test(subject || "") ? subject : prefix + ": " + (subject || "");
}

function openComposer(fields) {
  $("reader").hidden = true;
  $("composer").hidden = false;
  $("mail-view").classList.add("reading");
  $("compose-to").value = fields.to || "";
  $("compose-cc").value = fields.cc || "";
  $("compose-subject").value = fields.subject || "";
  $("compose-body").value = fields.body || "";
  $("compose-file").value = "";
  state.replyTo = fields.replyTo || null;
  state.forwarded = fields.forwarded || [];
  state.draftId = fields.draftId || null;
  const list = $("compose-forwarded");
  list.replaceChildren();
  for (const part of state.forwarded) {
    const item = document.createElement("li");
    item.textContent = "📎 " + (part.name || "attachment");
    list.append(item);
  }
  const focus = fields.to ? $("compose-body") : $("compose-to");
  focus.focus();
  if (focus === $("compose-body")) {
    focus.setSelectionRange(0, 0);
  }
}

function compose() {
  openComposer({});
}

function reply(email, all) {
  const to = (email.replyTo && email.replyTo.length ? email.replyTo : email.from) || [];
  const me = state.user.toLowerCase();
  const others = all
    ? (email.to || []).concat(email.cc || []).filter((a) => a.email.toLowerCase() !== me &&
      !to.some((t) => t.email.toLowerCase() === a.email.toLowerCase()))
    : [];
  openComposer({
    to: to.map((a) => a.email).join(", "),
    cc: others.map((a) => a.email).join(", "),
    subject: withPrefix("Re", email.subject),
    body: "\n\n" + quoted(email),
    replyTo: email,
  });
}

function forward(email) {
  const header = [
    "---------- Forwarded message ----------",
    "From: " + addresses(email.from),
    "Date: " + when(email),
    "Subject: " + (email.subject || ""),
    "To: " + addresses(email.to),
  ];
  if (email.cc && email.cc.length) {
    header.push("Cc: " + addresses(email.cc));
  }
  openComposer({
    subject: withPrefix("Fwd", email.subject),
    body: "\n\n" + header.join("\n") + "\n\n" + textOf(email),
    forwarded: (email.attachments || []).map((p) => ({ blobId: p.blobId, type: p.type, name: p.name })),
  });
}

function editDraft(email) {
  state.email = null;
  $("reader").hidden = true;
  openComposer({
    to: (email.to || []).map((a) => a.email).join(", "),
    cc: (email.cc || []).map((a) => a.email).join(", "),
    subject: email.subject || "",
    body: textOf(email),
    forwarded: (email.attachments || []).map((p) => ({ blobId: p.blobId, type: p.type, name: p.name })),
    draftId: email.id,
  });
}

async function upload(file) {
  const response = await fetch("/jmap/upload/" + state.accountId + "/", {
    method: "POST",
    headers: Object.assign({ "Content-Type": file.type || "application/octet-stream" }, auth()),
    body: file,
  });
  if (!response.ok) {
    throw new Error("upload refused: " + response.status);
  }
  return response.json();
}

function recipients(field) {
  return $(field).value.split(",").map((a) => a.trim()).filter((a) => a).map((email) => ({ email }));
}

// The composer's content as a draft Email in the Drafts folder.
async function draftEmail() {
  const drafts = role("drafts");
  const attachments = state.forwarded.slice();
  for (const file of $("compose-file").files) {
    const blob = await upload(file);
    attachments.push({ blobId: blob.blobId, type: file.type || "application/octet-stream", name: file.name });
  }
  const email = {
    mailboxIds: { [drafts.id]: true },
    keywords: { $draft: true, $seen: true },
    from: [{ email: state.user }],
    to: recipients("compose-to"),
    subject: $("compose-subject").value,
    textBody: [{ partId: "body", type: "text/plain" }],
    bodyValues: { body: { value: $("compose-body").value } },
  };
  const cc = recipients("compose-cc");
  if (cc.length) {
    email.cc = cc;
  }
  if (attachments.length) {
    email.attachments = attachments;
  }
  const reply = state.replyTo;
  if (reply && reply.messageId) {
    email.inReplyTo = reply.messageId;
    email.references = (reply.references || []).concat(reply.messageId);
  }
  return email;
}

async function saveDraft() {
  status("Saving…");
  try {
    const set = { accountId: state.accountId, create: { draft: await draftEmail() } };
    if (state.draftId) {
      set.destroy = [state.draftId];
    }
    const [[, result]] = await api([["Email/set", set, "c"]]);
    if (!result.created || !result.created.draft) {
      throw new Error(JSON.stringify(result.notCreated));
    }
    state.draftId = result.created.draft.id;
    // Saved attachments are parts of the draft now.
    $("compose-file").value = "";
    status("Draft saved");
  } catch (error) {
    status("Not saved: " + error.message);
  }
}

async function send(event) {
  event.preventDefault();
  status("Sending…");
  try {
    const drafts = role("drafts");
    const sent = role("sent");
    const create = { accountId: state.accountId, create: { draft: await draftEmail() } };
    if (state.draftId) {
      create.destroy = [state.draftId];
    }
    const onSuccess = { ["mailboxIds/" + drafts.id]: null, ["mailboxIds/" + sent.id]: true, "keywords/$draft": null };
    const responses = await api([
      ["Email/set", create, "c"],
      ["EmailSubmission/set", { accountId: state.accountId, create: { send: { identityId: "I0", emailId: "#draft" } },
        onSuccessUpdateEmail: { "#send": onSuccess } }, "s"],
    ]);
    const created = responses[0][1];
    if (!created.created || !created.created.draft) {
      throw new Error(JSON.stringify(created.notCreated));
    }
    state.draftId = created.created.draft.id;
    const submitted = responses[1][1];
    if (!submitted.created || !submitted.created.send) {
      throw new Error(JSON.stringify(submitted.notCreated));
    }
    const reply = state.replyTo;
    if (reply) {
      await api([["Email/set", { accountId: state.accountId, update: { [reply.id]: { "keywords/$answered": true } } }, "a"]]);
    }
    state.draftId = null;
    closeComposer();
    await refresh();
    status("Sent");
  } catch (error) {
    status("Not sent: " + error.message);
  }
}

function closeComposer() {
  $("composer").hidden = true;
  state.draftId = null;
  if (state.email) {
    $("reader").hidden = false;
  } else {
    showList();
  }
}

// ---- Keyboard ---------------------------------------------------------------------------
// As in Fastmail: j/k next and previous, r reply, a reply all, f forward, y (or e) archive,
// # or Delete delete, c write, / search, u or Escape back to the list.

function step(by) {
  if (!state.listed.length) {
    return;
  }
  state.cursor = Math.max(0, Math.min(state.listed.length - 1, state.cursor + by));
  markCursor();
  openEmail(state.listed[state.cursor]).catch((e) => status(e.message));
}

function shortcut(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || $("mail-view").hidden) {
    return;
  }
  const target = event.target;
  if (target.closest && target.closest("input, textarea, select, [contenteditable]")) {
    if (event.key === "Escape") {
      target.blur();
    }
    return;
  }
  const open = state.email && !$("reader").hidden;
  const actions = {
    j: () => step(1),
    k: () => step(-1),
    c: () => compose(),
    "/": () => $("search-box").focus(),
    u: () => closeReader(),
    Escape: () => closeReader(),
    r: () => open && reply(state.email, false),
    a: () => open && reply(state.email, true),
    f: () => open && forward(state.email),
    y: () => open && archive(),
    e: () => open && archive(),
    "#": () => open && remove(),
    Delete: () => open && remove(),
  };
  const action = actions[event.key];
  if (action) {
    event.preventDefault();
    Promise.resolve(action()).catch((e) => status(e.message));
  }
}

// ---- Start ------------------------------------------------------------------------------

async function refresh() {
  await loadMailboxes();
  if (state.mailboxId || state.search) {
    await loadMessages();
  }
}

async function start() {
  $("login-view").hidden = true;
  $("mail-view").hidden = false;
  $("user-name").textContent = state.user;
  await loadMailboxes();
  const inbox = role("inbox") || state.mailboxes[0];
  await openMailbox(inbox.id);
  listen();
}

document.addEventListener("DOMContentLoaded", () => {
  const run = (action) => () => Promise.resolve(action()).catch((e) => status(e.message));
  $("login-form").addEventListener("submit", login);
  $("logout-button").addEventListener("click", logout);
  $("refresh-button").addEventListener("click", run(refresh));
  $("search-form").addEventListener("submit", (event) => search(event).catch((e) => status(e.message)));
  $("search-box").addEventListener("search", (event) => search(event).catch((e) => status(e.message)));
  $("compose-button").addEventListener("click", compose);
  $("back-button").addEventListener("click", closeReader);
  $("composer-back").addEventListener("click", closeComposer);
  $("reply-button").addEventListener("click", () => reply(state.email, false));
  $("reply-all-button").addEventListener("click", () => reply(state.email, true));
  $("forward-button").addEventListener("click", () => forward(state.email));
  $("archive-button").addEventListener("click", run(archive));
  $("unread-button").addEventListener("click", run(() => setKeyword(state.email.id, "$seen", false)));
  $("move-button").addEventListener("click", run(() => moveTo($("move-select").value)));
  $("delete-button").addEventListener("click", run(remove));
  $("show-images").addEventListener("click", run(() => showImages(false)));
  $("always-images").addEventListener("click", run(() => showImages(true)));
  $("composer").addEventListener("submit", send);
  $("save-draft-button").addEventListener("click", saveDraft);
  $("cancel-button").addEventListener("click", closeComposer);
  document.addEventListener("keydown", shortcut);
  if (state.token) {
    start().catch(() => { sessionStorage.clear(); location.reload(); });
  }
});
