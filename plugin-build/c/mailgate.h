/* mailgate.h: write mailgate plugins in C (contract mailgate:plugin@0.2.1).
 *
 * The build (`mailgate plugin build`) generates plugin.h from the WIT contract for the stages
 * your *.c files define, and compiles them with this header and mailgate.c. Define
 *   void exports_mailgate_plugin_info_describe(mg_plugin_info_t *ret)
 * and one function per stage you want, named exports_mailgate_plugin_<stage>_handle
 * (<stage> is connect, helo, mail_from, rcpt_to, data, deliver or retrieve; see plugin.h for
 * the arguments). Only the stages you define are exported and called.
 *
 * Memory: the generated bindings hand each stage function its arguments to own (free them
 * with mg_free_session / mg_free_envelope / ...), and free the verdict you return after the
 * host has read it, so everything placed in it must come from malloc (the mg_verdict_*
 * helpers copy their strings). The message is only borrowed.
 */
#ifndef MAILGATE_H
#define MAILGATE_H

#include "plugin.h"

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

typedef plugin_string_t mg_string_t;
typedef mailgate_plugin_types_plugin_info_t mg_plugin_info_t;
typedef mailgate_plugin_types_session_t mg_session_t;
typedef mailgate_plugin_types_envelope_t mg_envelope_t;
typedef mailgate_plugin_types_esmtp_params_t mg_params_t;
typedef mailgate_plugin_types_delivery_t mg_delivery_t;
typedef mailgate_plugin_types_retrieval_t mg_retrieval_t;
typedef mailgate_plugin_types_borrow_message_t mg_message_t;
typedef mailgate_plugin_types_verdict_t mg_verdict_t;
typedef mailgate_plugin_types_mime_part_t mg_part_t;
typedef mailgate_plugin_types_list_mime_part_t mg_parts_t;
typedef plugin_list_string_t mg_strings_t;

/* describe: name and version (no host capabilities, no declared config keys). */
void mg_describe(mg_plugin_info_t *ret, const char *name, const char *version);

/* describe: declares one key of the plugin's [plugin.config] table, after mg_describe.
 * `value_type` is string, integer, float, boolean, string-list or table; `default_toml` the
 * default as TOML text, or NULL. Once a plugin declares keys, the gateway refuses a config
 * with keys it does not declare or values of another type (`mailgate config check` says
 * which, with the line). */
void mg_declare(mg_plugin_info_t *ret, const char *name, const char *value_type,
                const char *default_toml, const char *doc);

/* describe: like mg_declare, for a key the config must set (no default). */
void mg_declare_required(mg_plugin_info_t *ret, const char *name, const char *value_type,
                         const char *doc);

/* describe: asks for a capability ("kv", "dns", "files"), after mg_describe; the operator
 * grants it with `grant = [...]`. */
void mg_capability(mg_plugin_info_t *ret, const char *capability);

/* What a capability's function returns: MG_OK, or why it did not work (the reason the host
 * gave is in mg_last_error() until the next call). */
typedef enum {
    MG_OK = 0,
    MG_NOT_DECLARED, /* the plugin did not ask for the capability in describe */
    MG_NOT_GRANTED,  /* the operator did not grant it */
    MG_FAILED,       /* the store or the read failed (see mg_last_error) */
} mg_status_t;
const char *mg_last_error(void);

/* kv: the persistent store, per plugin name. A value is NUL-terminated text from malloc (the
 * caller frees it); *value is NULL when the key is absent. ttl_seconds 0: no expiry. */
mg_status_t mg_kv_get(const char *key, char **value);
mg_status_t mg_kv_set(const char *key, const char *value, uint32_t ttl_seconds);
mg_status_t mg_kv_delete(const char *key);
/* Adds delta atomically (across instances and nodes) and gives the new value; the TTL starts
 * a fixed window when the entry is created. */
mg_status_t mg_kv_incr(const char *key, int64_t delta, uint32_t ttl_seconds, int64_t *value);

/* files: a whole file under the directory the operator's `files` names, read-only; *bytes
 * from malloc (the caller frees it), NUL-terminated after its *len bytes. */
mg_status_t mg_file_read(const char *path, char **bytes, size_t *len);

/* The gateway's sender authentication results (data stage, contract 0.2.1; `[auth] verify`
 * decides which are checked). mg_dmarc is false when there is no DMARC result; free a result
 * with mg_dmarc_free. mg_auth_outcome names an outcome ("pass", "fail", ...). */
typedef mailgate_plugin_auth_dmarc_check_t mg_dmarc_t;
bool mg_dmarc(mg_dmarc_t *ret);
void mg_dmarc_free(mg_dmarc_t *dmarc);
const char *mg_auth_outcome(mailgate_plugin_auth_outcome_t outcome);
/* "none", "quarantine" or "reject": the policy the From domain's record asks for; NULL
 * without a record. */
const char *mg_dmarc_policy(const mg_dmarc_t *dmarc);

/* Verdicts. Codes must be 5xx for reject and 4xx for tempfail; the host checks. */
void mg_verdict_continue(mg_verdict_t *ret);
void mg_verdict_reject(mg_verdict_t *ret, uint16_t code, const char *enhanced, const char *text);
void mg_verdict_tempfail(mg_verdict_t *ret, uint16_t code, const char *enhanced, const char *text);

/* Edits, asked for during a stage call and applied when it returns. False when the host
 * refuses the edit (the call is then a fault, and the reason is in the log). */
bool mg_add_header(const char *name, const char *value);
/* Replaces every field of that name by one (or adds it). */
bool mg_set_header(const char *name, const char *value);
bool mg_remove_header(const char *name);
bool mg_append_footer(const char *text);
/* Envelope edits (mail-from, rcpt-to, data). */
bool mg_change_sender(const char *address);
bool mg_add_recipient(const char *address);
bool mg_remove_recipient(const char *address);

/* Strings from the host are not NUL-terminated. */
bool mg_string_eq_ignore_case(const mg_string_t *s, const char *text);
/* A NUL-terminated copy from malloc (the caller frees it). */
char *mg_string_cstr(const mg_string_t *s);

/* This plugin's config: an integer at a dotted key, or `fallback` when missing or not a
 * number. */
int64_t mg_config_int(const char *key, int64_t fallback);

/* This plugin's config: the text at a dotted key as a NUL-terminated string from malloc (the
 * caller frees it), or NULL when missing. */
char *mg_config_string(const char *key);

/* This plugin's config: an array of scalars at a dotted key (a scalar gives one entry, a
 * missing key none); free it with mg_strings_free. */
void mg_config_list(const char *key, mg_strings_t *ret);
void mg_strings_free(mg_strings_t *list);

void mg_log_info(const char *message);
void mg_log_warn(const char *message);

/* This plugin's config: a boolean at a dotted key ("true" or "false"), or `fallback`. */
bool mg_config_bool(const char *key, bool fallback);

/* The message's MIME tree; free it with mg_parts_free. */
void mg_message_parts(mg_message_t message, mg_parts_t *ret);
void mg_parts_free(mg_parts_t *parts);

void mg_free_session(mg_session_t *session);
void mg_free_envelope(mg_envelope_t *envelope);
void mg_free_params(mg_params_t *params);
void mg_free_string(mg_string_t *s);
void mg_free_delivery(mg_delivery_t *delivery);
void mg_free_retrieval(mg_retrieval_t *retrieval);

#endif
