/* {{name}}: refuses recipients at the domains listed in `blocked-domains` and stamps every
 * accepted message with `X-Checked-By: {{name}}`.
 *
 * Build: `mailgate plugin build` (zig's clang; the component lands in target/{{output}}.wasm);
 * test: `mailgate test cases`. mailgate.h and the bindings it includes are generated from
 * the contract at build time, for the stages defined here: only those are exported and
 * called (exports_mailgate_plugin_<stage>_handle, <stage> one of connect, helo, mail_from,
 * rcpt_to, data, deliver, retrieve). */
#include "mailgate.h"

#include <stdio.h>
#include <stdlib.h>

void exports_mailgate_plugin_info_describe(mg_plugin_info_t *ret) {
    mg_describe(ret, "{{name}}", "0.1.0");
}

void exports_mailgate_plugin_rcpt_to_handle(mg_session_t *session, mg_envelope_t *envelope,
                                            mg_string_t *recipient, mg_params_t *params,
                                            mg_verdict_t *ret) {
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
        mg_verdict_reject(ret, 550, "5.7.1", text);
    } else {
        mg_verdict_continue(ret);
    }
    mg_free_session(session);
    mg_free_envelope(envelope);
    mg_free_string(recipient);
    mg_free_params(params);
}

void exports_mailgate_plugin_data_handle(mg_session_t *session, mg_envelope_t *envelope,
                                         mg_message_t message, mg_verdict_t *ret) {
    (void)message;
    mg_free_session(session);
    mg_free_envelope(envelope);
    mg_add_header("X-Checked-By", "{{name}}");
    mg_verdict_continue(ret);
}
