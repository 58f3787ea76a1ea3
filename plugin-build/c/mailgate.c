/* mailgate.c: the helpers declared in mailgate.h. */
#include "mailgate.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

void mg_describe(mg_plugin_info_t *ret, const char *name, const char *version) {
    plugin_string_dup(&ret->name, name);
    plugin_string_dup(&ret->version, version);
    ret->capabilities.ptr = NULL;
    ret->capabilities.len = 0;
    ret->config.ptr = NULL;
    ret->config.len = 0;
}

void mg_declare(mg_plugin_info_t *ret, const char *name, const char *value_type,
                const char *default_toml, const char *doc) {
    size_t len = ret->config.len;
    mailgate_plugin_types_config_key_t *keys =
        realloc(ret->config.ptr, (len + 1) * sizeof(mailgate_plugin_types_config_key_t));
    if (!keys) {
        return;
    }
    mailgate_plugin_types_config_key_t *key = &keys[len];
    plugin_string_dup(&key->name, name);
    plugin_string_dup(&key->value_type, value_type);
    key->default_.is_some = default_toml != NULL;
    if (default_toml) {
        plugin_string_dup(&key->default_.val, default_toml);
    }
    plugin_string_dup(&key->doc, doc);
    key->required = false;
    ret->config.ptr = keys;
    ret->config.len = len + 1;
}

void mg_verdict_continue(mg_verdict_t *ret) { ret->tag = MAILGATE_PLUGIN_TYPES_VERDICT_CONTINUE; }

/* "5.3.4" -> class 5, subject 3, detail 4; anything else -> none. */
static void parse_enhanced(const char *text, mailgate_plugin_types_option_enhanced_status_t *ret) {
    unsigned long parts[3] = {0, 0, 0};
    const char *at = text;
    ret->is_some = false;
    for (int i = 0; at && i < 3; i++) {
        char *end = NULL;
        parts[i] = strtoul(at, &end, 10);
        if (end == at || (i < 2 && *end != '.') || (i == 2 && *end != '\0')) {
            return;
        }
        at = end + 1;
    }
    if (!text) {
        return;
    }
    ret->is_some = true;
    ret->val.class_ = (uint8_t)parts[0];
    ret->val.subject = (uint16_t)parts[1];
    ret->val.detail = (uint16_t)parts[2];
}

static void reply(mailgate_plugin_types_reply_t *ret, uint16_t code, const char *enhanced,
                  const char *text) {
    ret->code = code;
    parse_enhanced(enhanced, &ret->enhanced);
    ret->lines.ptr = malloc(sizeof(plugin_string_t));
    ret->lines.len = 1;
    plugin_string_dup(&ret->lines.ptr[0], text);
}

void mg_verdict_reject(mg_verdict_t *ret, uint16_t code, const char *enhanced, const char *text) {
    ret->tag = MAILGATE_PLUGIN_TYPES_VERDICT_REJECT;
    reply(&ret->val.reject, code, enhanced, text);
}

void mg_verdict_tempfail(mg_verdict_t *ret, uint16_t code, const char *enhanced,
                         const char *text) {
    ret->tag = MAILGATE_PLUGIN_TYPES_VERDICT_TEMPFAIL;
    reply(&ret->val.tempfail, code, enhanced, text);
}

bool mg_add_header(const char *name, const char *value) {
    plugin_string_t n, v, err;
    plugin_string_set(&n, name);
    plugin_string_set(&v, value);
    bool ok = mailgate_plugin_edits_add_header(&n, &v, &err);
    if (!ok) {
        plugin_string_free(&err);
    }
    return ok;
}

bool mg_string_eq_ignore_case(const mg_string_t *s, const char *text) {
    size_t n = strlen(text);
    if (s->len != n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (tolower(s->ptr[i]) != tolower((unsigned char)text[i])) {
            return false;
        }
    }
    return true;
}

char *mg_string_cstr(const mg_string_t *s) {
    char *out = malloc(s->len + 1);
    memcpy(out, s->ptr, s->len);
    out[s->len] = '\0';
    return out;
}

char *mg_config_string(const char *key) {
    plugin_string_t k, value;
    plugin_string_set(&k, key);
    if (!mailgate_plugin_host_config_get(&k, &value)) {
        return NULL;
    }
    char *text = mg_string_cstr(&value);
    plugin_string_free(&value);
    return text;
}

int64_t mg_config_int(const char *key, int64_t fallback) {
    char *text = mg_config_string(key);
    if (!text) {
        return fallback;
    }
    char *end = NULL;
    long long parsed = strtoll(text, &end, 10);
    bool ok = end != text && *end == '\0';
    free(text);
    return ok ? (int64_t)parsed : fallback;
}

void mg_config_list(const char *key, mg_strings_t *ret) {
    plugin_string_t k;
    plugin_string_set(&k, key);
    mailgate_plugin_host_config_list(&k, ret);
}

void mg_strings_free(mg_strings_t *list) { plugin_list_string_free(list); }

void mg_log_info(const char *message) {
    plugin_string_t text;
    plugin_list_tuple2_string_string_t fields = {NULL, 0};
    plugin_string_set(&text, message);
    mailgate_plugin_host_log(MAILGATE_PLUGIN_HOST_LEVEL_INFO, &text, &fields);
}

void mg_message_parts(mg_message_t message, mg_parts_t *ret) {
    mailgate_plugin_types_method_message_parts(message, ret);
}

void mg_parts_free(mg_parts_t *parts) { mailgate_plugin_types_list_mime_part_free(parts); }

void mg_free_session(mg_session_t *session) { mailgate_plugin_types_session_free(session); }
void mg_free_envelope(mg_envelope_t *envelope) { mailgate_plugin_types_envelope_free(envelope); }
void mg_free_params(mg_params_t *params) { mailgate_plugin_types_esmtp_params_free(params); }
void mg_free_string(mg_string_t *s) { plugin_string_free(s); }
void mg_free_delivery(mg_delivery_t *delivery) { mailgate_plugin_types_delivery_free(delivery); }
void mg_free_retrieval(mg_retrieval_t *retrieval) { mailgate_plugin_types_retrieval_free(retrieval); }

void mg_declare_required(mg_plugin_info_t *ret, const char *name, const char *value_type,
                         const char *doc) {
    size_t before = ret->config.len;
    mg_declare(ret, name, value_type, NULL, doc);
    if (ret->config.len > before) {
        ret->config.ptr[before].required = true;
    }
}

void mg_capability(mg_plugin_info_t *ret, const char *capability) {
    size_t len = ret->capabilities.len;
    plugin_string_t *list = realloc(ret->capabilities.ptr, (len + 1) * sizeof(plugin_string_t));
    if (!list) {
        return;
    }
    plugin_string_dup(&list[len], capability);
    ret->capabilities.ptr = list;
    ret->capabilities.len = len + 1;
}

/* The reason of the last refused capability call, for mg_last_error. */
static char last_error[256];

const char *mg_last_error(void) { return last_error; }

static void remember(const plugin_string_t *reason) {
    size_t n = reason->len < sizeof last_error - 1 ? reason->len : sizeof last_error - 1;
    memcpy(last_error, reason->ptr, n);
    last_error[n] = '\0';
}

/* A host `denied` as a status (its text kept for mg_last_error), freed. */
static mg_status_t denied(mailgate_plugin_host_denied_t *err) {
    mg_status_t status = MG_FAILED;
    switch (err->tag) {
    case MAILGATE_PLUGIN_HOST_DENIED_NOT_DECLARED:
        status = MG_NOT_DECLARED;
        remember(&err->val.not_declared);
        break;
    case MAILGATE_PLUGIN_HOST_DENIED_NOT_GRANTED:
        status = MG_NOT_GRANTED;
        remember(&err->val.not_granted);
        break;
    default:
        remember(&err->val.failed);
    }
    mailgate_plugin_host_denied_free(err);
    return status;
}

static void clear_error(void) { last_error[0] = '\0'; }

mg_status_t mg_kv_get(const char *key, char **value) {
    plugin_string_t k;
    plugin_option_string_t found;
    mailgate_plugin_host_denied_t err;
    plugin_string_set(&k, key);
    *value = NULL;
    clear_error();
    if (!mailgate_plugin_host_kv_get(&k, &found, &err)) {
        return denied(&err);
    }
    if (found.is_some) {
        *value = mg_string_cstr(&found.val);
        plugin_string_free(&found.val);
    }
    return MG_OK;
}

mg_status_t mg_kv_set(const char *key, const char *value, uint32_t ttl_seconds) {
    plugin_string_t k, v;
    mailgate_plugin_host_denied_t err;
    plugin_string_set(&k, key);
    plugin_string_set(&v, value);
    clear_error();
    if (!mailgate_plugin_host_kv_set(&k, &v, ttl_seconds ? &ttl_seconds : NULL, &err)) {
        return denied(&err);
    }
    return MG_OK;
}

mg_status_t mg_kv_delete(const char *key) {
    plugin_string_t k;
    mailgate_plugin_host_denied_t err;
    plugin_string_set(&k, key);
    clear_error();
    if (!mailgate_plugin_host_kv_delete(&k, &err)) {
        return denied(&err);
    }
    return MG_OK;
}

mg_status_t mg_kv_incr(const char *key, int64_t delta, uint32_t ttl_seconds, int64_t *value) {
    plugin_string_t k;
    mailgate_plugin_host_denied_t err;
    plugin_string_set(&k, key);
    clear_error();
    if (!mailgate_plugin_host_kv_incr(&k, delta, ttl_seconds ? &ttl_seconds : NULL, value,
                                      &err)) {
        return denied(&err);
    }
    return MG_OK;
}

mg_status_t mg_file_read(const char *path, char **bytes, size_t *len) {
    plugin_string_t p;
    plugin_list_u8_t content;
    mailgate_plugin_host_denied_t err;
    plugin_string_set(&p, path);
    *bytes = NULL;
    *len = 0;
    clear_error();
    if (!mailgate_plugin_host_file_read(&p, &content, &err)) {
        return denied(&err);
    }
    char *copy = malloc(content.len + 1);
    if (!copy) {
        plugin_list_u8_free(&content);
        return MG_FAILED;
    }
    if (content.len) {
        memcpy(copy, content.ptr, content.len);
    }
    copy[content.len] = '\0';
    *bytes = copy;
    *len = content.len;
    plugin_list_u8_free(&content);
    return MG_OK;
}

bool mg_dmarc(mg_dmarc_t *ret) { return mailgate_plugin_auth_dmarc(ret); }

void mg_dmarc_free(mg_dmarc_t *dmarc) { mailgate_plugin_auth_dmarc_check_free(dmarc); }

const char *mg_auth_outcome(mailgate_plugin_auth_outcome_t outcome) {
    static const char *names[] = {"none",    "pass",      "fail",     "softfail",
                                  "neutral", "temperror", "permerror"};
    return outcome < sizeof names / sizeof names[0] ? names[outcome] : "unknown";
}

const char *mg_dmarc_policy(const mg_dmarc_t *dmarc) {
    if (!dmarc->policy.is_some) {
        return NULL;
    }
    switch (dmarc->policy.val) {
    case MAILGATE_PLUGIN_AUTH_DMARC_POLICY_QUARANTINE:
        return "quarantine";
    case MAILGATE_PLUGIN_AUTH_DMARC_POLICY_REJECT:
        return "reject";
    default:
        return "none";
    }
}

/* An edit taking one string: its error text is dropped (the host logs the refusal). */
typedef bool (*edit1_t)(plugin_string_t *, plugin_string_t *);

static bool edit1(edit1_t edit, const char *text) {
    plugin_string_t t, err;
    plugin_string_set(&t, text);
    bool ok = edit(&t, &err);
    if (!ok) {
        plugin_string_free(&err);
    }
    return ok;
}

bool mg_set_header(const char *name, const char *value) {
    plugin_string_t n, v, err;
    plugin_string_set(&n, name);
    plugin_string_set(&v, value);
    bool ok = mailgate_plugin_edits_set_header(&n, &v, &err);
    if (!ok) {
        plugin_string_free(&err);
    }
    return ok;
}

bool mg_remove_header(const char *name) {
    return edit1(mailgate_plugin_edits_remove_header, name);
}
bool mg_append_footer(const char *text) {
    return edit1(mailgate_plugin_edits_append_footer, text);
}
bool mg_change_sender(const char *address) {
    return edit1(mailgate_plugin_edits_change_sender, address);
}
bool mg_add_recipient(const char *address) {
    return edit1(mailgate_plugin_edits_add_recipient, address);
}
bool mg_remove_recipient(const char *address) {
    return edit1(mailgate_plugin_edits_remove_recipient, address);
}

void mg_log_warn(const char *message) {
    plugin_string_t text;
    plugin_list_tuple2_string_string_t fields = {NULL, 0};
    plugin_string_set(&text, message);
    mailgate_plugin_host_log(MAILGATE_PLUGIN_HOST_LEVEL_WARN, &text, &fields);
}

bool mg_config_bool(const char *key, bool fallback) {
    char *text = mg_config_string(key);
    if (!text) {
        return fallback;
    }
    bool value = fallback;
    if (strcmp(text, "true") == 0) {
        value = true;
    } else if (strcmp(text, "false") == 0) {
        value = false;
    }
    free(text);
    return value;
}
