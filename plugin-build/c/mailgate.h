/* mailgate.h: write mailgate plugins in C.
 *
 * The build (`mailgate plugin build`) generates plugin.h from the WIT contract and compiles
 * your *.c files with this header and mailgate.c. Define the stages you use; every other stage
 * already has a definition that frees its arguments and lets the message through.
 *
 * Memory: the generated bindings hand each stage function its arguments to own (the stage
 * frees them: the helpers below do for the stages you do not define, and you call
 * mg_free_session / mg_free_envelope / ... in yours), and free the outcome you return after
 * the host has read it, so everything placed in an outcome must come from malloc (the
 * mg_outcome_* helpers copy their strings). The message is only borrowed.
 */
#ifndef MAILGATE_H
#define MAILGATE_H

#include "plugin.h"

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

typedef plugin_string_t mg_string_t;
typedef exports_mailgate_plugin_handler_plugin_info_t mg_plugin_info_t;
typedef exports_mailgate_plugin_handler_session_t mg_session_t;
typedef exports_mailgate_plugin_handler_envelope_t mg_envelope_t;
typedef exports_mailgate_plugin_handler_list_esmtp_param_t mg_params_t;
typedef exports_mailgate_plugin_handler_delivery_t mg_delivery_t;
typedef exports_mailgate_plugin_handler_retrieval_t mg_retrieval_t;
typedef exports_mailgate_plugin_handler_borrow_message_t mg_message_t;
typedef exports_mailgate_plugin_handler_outcome_t mg_outcome_t;
typedef mailgate_plugin_types_stage_t mg_stage_t;
typedef mailgate_plugin_types_mime_part_t mg_part_t;
typedef mailgate_plugin_types_list_mime_part_t mg_parts_t;
typedef plugin_list_string_t mg_strings_t;

/* describe: name, version and the stages to be called at (no host capabilities). */
void mg_describe(mg_plugin_info_t *ret, const char *name, const char *version,
                 const mg_stage_t *stages, size_t stage_count);

/* Outcomes. Codes must be 5xx for reject and 4xx for tempfail; the host checks. */
void mg_outcome_continue(mg_outcome_t *ret);
void mg_outcome_reject(mg_outcome_t *ret, uint16_t code, const char *enhanced, const char *text);
void mg_outcome_tempfail(mg_outcome_t *ret, uint16_t code, const char *enhanced, const char *text);
/* Appends an add-header edit to the outcome. */
void mg_outcome_add_header(mg_outcome_t *ret, const char *name, const char *value);

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
