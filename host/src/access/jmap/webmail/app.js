// mailgate webmail: a small client that speaks JMAP only (RFC 8620, RFC 8621). Everything a
// message brings is put on the page as text; its HTML comes sanitised by the server and is
// shown in a sandboxed frame.
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
  email: null,
  replyTo: null,
};

function status(text) {
  $("status").textContent = text;
}

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

function role(name) {
  return state.mailboxes.find((m) => m.role === name);
}

async function loadMailboxes() {
  const [[, result]] = await api([["Mailbox/get", { accountId: state.accountId }, "m"]]);
  state.mailboxes = result.list.sort((a, b) => a.sortOrder - b.sortOrder || a.name.localeCompare(b.name));
  const list = $("mailboxes");
  list.replaceChildren();
  const select = $("move-select");
  select.replaceChildren();
  for (const mailbox of state.mailboxes) {
    const item = document.createElement("li");
    item.dataset.id = mailbox.id;
    item.dataset.role = mailbox.role || "";
    item.textContent = mailbox.name + (mailbox.unreadEmails ? " (" + mailbox.unreadEmails + ")" : "");
    item.classList.toggle("current", mailbox.id === state.mailboxId);
    item.addEventListener("click", () => openMailbox(mailbox.id));
    list.append(item);
    const option = document.createElement("option");
    option.value = mailbox.id;
    option.textContent = mailbox.name;
    select.append(option);
  }
}

function addresses(list) {
  return (list || []).map((a) => (a.name ? a.name + " <" + a.email + ">" : a.email)).join(", ");
}

async function openMailbox(id) {
  state.mailboxId = id;
  for (const item of $("mailboxes").children) {
    item.classList.toggle("current", item.dataset.id === id);
  }
  await loadMessages();
}

async function loadMessages() {
  const responses = await api([
    ["Email/query", { accountId: state.accountId, filter: { inMailbox: state.mailboxId },
      sort: [{ property: "receivedAt", isAscending: false }], limit: 200 }, "q"],
    ["Email/get", { accountId: state.accountId, "#ids": { resultOf: "q", name: "Email/query", path: "/ids" },
      properties: ["subject", "from", "receivedAt", "keywords", "preview", "hasAttachment"] }, "g"],
  ]);
  const list = $("messages");
  list.replaceChildren();
  for (const email of responses[1][1].list) {
    const item = document.createElement("li");
    item.dataset.id = email.id;
    item.classList.toggle("unread", !email.keywords.$seen);
    item.classList.toggle("current", state.email && state.email.id === email.id);
    const subject = document.createElement("span");
    subject.className = "subject";
    subject.textContent = (email.hasAttachment ? "📎 " : "") + (email.subject || "(no subject)");
    const from = document.createElement("span");
    from.className = "preview";
    from.textContent = addresses(email.from) + " — " + email.preview;
    item.append(subject, from);
    item.addEventListener("click", () => openEmail(email.id));
    list.append(item);
  }
  status(responses[1][1].list.length + " message(s)");
}

// The text of an email's textBody. Where a part is HTML (a message with no text form), its
// words, not its markup: parsed into an inert document (no script runs, nothing loads).
function textOf(email) {
  return (email.textBody || []).map((part) => {
    const value = (email.bodyValues[part.partId] || {}).value || "";
    if (part.type !== "text/html") {
      return value;
    }
    return new DOMParser().parseFromString(value, "text/html").body.textContent.trim();
  }).join("\n");
}

async function openEmail(id) {
  const [[, result]] = await api([["Email/get", { accountId: state.accountId, ids: [id],
    properties: ["subject", "from", "to", "cc", "replyTo", "receivedAt", "keywords", "mailboxIds", "messageId",
      "references", "textBody", "htmlBody", "attachments", "bodyValues"],
    fetchTextBodyValues: true }, "e"]]);
  const email = result.list[0];
  if (!email) {
    status("That message is gone");
    return;
  }
  state.email = email;
  $("composer").hidden = true;
  $("reader").hidden = false;
  $("message-subject").textContent = email.subject || "(no subject)";
  $("message-from").textContent = "From: " + addresses(email.from);
  $("message-to").textContent = "To: " + addresses(email.to) + (email.cc ? "; Cc: " + addresses(email.cc) : "");
  $("message-date").textContent = new Date(email.receivedAt).toLocaleString();
  const text = textOf(email);
  const html = (email.htmlBody || []).some((part) => part.type === "text/html");
  const frame = $("message-html");
  const pre = $("message-text");
  if (html) {
    const response = await fetch("/webmail/html/" + encodeURIComponent(email.id), { headers: auth() });
    frame.srcdoc = response.ok ? await response.text() : "";
    frame.hidden = false;
    pre.hidden = true;
  } else {
    pre.textContent = text;
    pre.hidden = false;
    frame.hidden = true;
    frame.srcdoc = "";
  }
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
  if (!email.keywords.$seen) {
    await setKeyword(email.id, "$seen", true);
  }
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

async function moveTo(mailboxId) {
  const email = state.email;
  const from = Object.keys(email.mailboxIds)[0];
  if (from === mailboxId) {
    return;
  }
  await api([["Email/set", { accountId: state.accountId, update: { [email.id]: { mailboxIds: { [mailboxId]: true } } } }, "mv"]]);
  $("reader").hidden = true;
  state.email = null;
  await refresh();
  status("Moved");
}

async function remove() {
  const trash = role("trash");
  const email = state.email;
  if (trash && !email.mailboxIds[trash.id]) {
    await moveTo(trash.id);
    return;
  }
  await api([["Email/set", { accountId: state.accountId, destroy: [email.id] }, "d"]]);
  $("reader").hidden = true;
  state.email = null;
  await refresh();
  status("Deleted");
}

function compose(reply) {
  $("reader").hidden = true;
  $("composer").hidden = false;
  state.replyTo = reply || null;
  if (reply) {
    const to = (reply.replyTo && reply.replyTo.length ? reply.replyTo : reply.from) || [];
    $("compose-to").value = to.map((a) => a.email).join(", ");
    const subject = reply.subject || "";
    $("compose-subject").value = /^re:/i.test(subject) ? subject : "Re: " + subject;
    const quoted = textOf(reply).split("\n").map((line) => "> " + line).join("\n");
    $("compose-body").value = "\n\n" + quoted;
  } else {
    $("compose-to").value = "";
    $("compose-subject").value = "";
    $("compose-body").value = "";
  }
  $("compose-file").value = "";
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

async function send(event) {
  event.preventDefault();
  status("Sending…");
  try {
    const drafts = role("drafts");
    const sent = role("sent");
    const attachments = [];
    for (const file of $("compose-file").files) {
      const blob = await upload(file);
      attachments.push({ blobId: blob.blobId, type: file.type || "application/octet-stream", name: file.name });
    }
    const to = $("compose-to").value.split(",").map((a) => a.trim()).filter((a) => a).map((email) => ({ email }));
    const email = {
      mailboxIds: { [drafts.id]: true },
      keywords: { $draft: true, $seen: true },
      from: [{ email: state.user }],
      to,
      subject: $("compose-subject").value,
      textBody: [{ partId: "body", type: "text/plain" }],
      bodyValues: { body: { value: $("compose-body").value } },
    };
    if (attachments.length) {
      email.attachments = attachments;
    }
    const reply = state.replyTo;
    if (reply && reply.messageId) {
      email.inReplyTo = reply.messageId;
      email.references = (reply.references || []).concat(reply.messageId);
    }
    const onSuccess = { ["mailboxIds/" + drafts.id]: null, ["mailboxIds/" + sent.id]: true, "keywords/$draft": null };
    const responses = await api([
      ["Email/set", { accountId: state.accountId, create: { draft: email } }, "c"],
      ["EmailSubmission/set", { accountId: state.accountId, create: { send: { identityId: "I0", emailId: "#draft" } },
        onSuccessUpdateEmail: { "#send": onSuccess } }, "s"],
    ]);
    const created = responses[0][1];
    if (!created.created || !created.created.draft) {
      throw new Error(JSON.stringify(created.notCreated));
    }
    const submitted = responses[1][1];
    if (!submitted.created || !submitted.created.send) {
      throw new Error(JSON.stringify(submitted.notCreated));
    }
    if (reply) {
      await api([["Email/set", { accountId: state.accountId, update: { [reply.id]: { "keywords/$answered": true } } }, "a"]]);
    }
    $("composer").hidden = true;
    await refresh();
    status("Sent");
  } catch (error) {
    status("Not sent: " + error.message);
  }
}

async function refresh() {
  await loadMailboxes();
  if (state.mailboxId) {
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
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout-button").addEventListener("click", logout);
  $("refresh-button").addEventListener("click", () => refresh().catch((e) => status(e.message)));
  $("compose-button").addEventListener("click", () => compose(null));
  $("reply-button").addEventListener("click", () => compose(state.email));
  $("unread-button").addEventListener("click", () => setKeyword(state.email.id, "$seen", false));
  $("move-button").addEventListener("click", () => moveTo($("move-select").value));
  $("delete-button").addEventListener("click", () => remove());
  $("composer").addEventListener("submit", send);
  $("cancel-button").addEventListener("click", () => { $("composer").hidden = true; });
  if (state.token) {
    start().catch(() => { sessionStorage.clear(); location.reload(); });
  }
});
