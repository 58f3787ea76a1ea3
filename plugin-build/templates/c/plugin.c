/* {{name}}: refuses recipients at the domains listed in `blocked-domains` and stamps every
 * accepted message with `X-Checked-By: {{name}}`.
 *
 * Build: `mailgate plugin build` (zig's clang; the component lands in target/plugin.wasm);
 * test: `mailgate test cases`. mailgate.h and the bindings it includes are generated from
 * wit/ at build time; stages not defined here let every message through. */
#include "mailgate.h"

#include <stdio.h>
#include <stdlib.h>

void exports_mailgate_plugin_handler_describe(mg_plugin_info_t *ret) {
    const mg_stage_t stages[] = {MAILGATE_PLUGIN_TYPES_STAGE_RCPT_TO,
                                 MAILGATE_PLUGIN_TYPES_STAGE_DATA};
    mg_describe(ret, "{{name}}", "0.1.0", stages, 2);
}

void exports_mailgate_plugin_handler_rcpt_to(mg_session_t *session, mg_envelope_t *envelope,
                                             mg_string_t *recipient, mg_params_t *params,
                                             mg_outcome_t *ret) {
    mg_string_t domain = *recipient;
    for (size_t i = recipient->len; i > 0; i--) {
        if (recipient->ptr[i - 1] == '@') {
            domain.ptr = recipient->ptr + i;
            domain.len = recipient->len - i;
            break;
        }
    }
    mg_strings_t blocked;
    mg_config_list("blocked-domains", &blocked);
    bool refuse = false;
    for (size_t i = 0; i < blocked.len && !refuse; i++) {
        char *name = mg_string_cstr(&blocked.ptr[i]);
        refuse = mg_string_eq_ignore_case(&domain, name);
        free(name);
    }
    mg_strings_free(&blocked);
    if (refuse) {
        char *shown = mg_string_cstr(&domain);
        char text[300];
        snprintf(text, sizeof text, "No mail for %s here", shown);
        free(shown);
        mg_outcome_reject(ret, 550, "5.7.1", text);
    } else {
        mg_outcome_continue(ret);
    }
    mg_free_session(session);
    mg_free_envelope(envelope);
    mg_free_string(recipient);
    mg_free_params(params);
}

void exports_mailgate_plugin_handler_data(mg_session_t *session, mg_envelope_t *envelope,
                                          mg_message_t message, mg_outcome_t *ret) {
    (void)message;
    mg_free_session(session);
    mg_free_envelope(envelope);
    mg_outcome_continue(ret);
    mg_outcome_add_header(ret, "X-Checked-By", "{{name}}");
}
