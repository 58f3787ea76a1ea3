/* attachment-limit: counts a message's attachments over its MIME tree and refuses messages
 * with too many, one too large, or too many bytes of them in all.
 *
 * Config (all optional):
 *   max-attachments       = 10         attachments per message
 *   max-attachment-bytes  = 10485760   per attachment, decoded
 *   max-total-bytes       = 26214400   all attachments together, decoded
 *
 * An attachment is a leaf part (not a multipart container, not message/rfc822) that is marked
 * `Content-Disposition: attachment` or carries a file name; attachments of forwarded
 * messages count too. Sizes are estimated from the encoded size (see decoded_size), so the
 * plugin never copies a part's content. Accepted messages get `X-Attachment-Count: N`.
 */
#include "mailgate.h"

#include <stdio.h>
#include <stdlib.h>

static bool is_attachment(const mg_part_t *part) {
    if (part->is_multipart || part->is_message) {
        return false;
    }
    bool marked = part->disposition.is_some &&
                  mg_string_eq_ignore_case(&part->disposition.val, "attachment");
    return marked || part->filename.is_some;
}

/* The decoded size, from the encoded one: base64 carries 3 bytes in 4 characters, on lines of
 * 76 characters and a CRLF (RFC 2045's limit; with longer lines it comes out up to ~3% low). */
static uint64_t decoded_size(const mg_part_t *part) {
    bool base64 = part->transfer_encoding.is_some &&
                  mg_string_eq_ignore_case(&part->transfer_encoding.val, "base64");
    if (!base64) {
        return part->size;
    }
    uint64_t lines = (part->size + 77) / 78;
    uint64_t chars = part->size > 2 * lines ? part->size - 2 * lines : 0;
    return chars / 4 * 3;
}

void exports_mailgate_plugin_info_describe(mg_plugin_info_t *ret) {
    mg_describe(ret, "attachment-limit", "0.2.0");
    mg_declare(ret, "max-attachments", "integer", "10", "attachments per message");
    mg_declare(ret, "max-attachment-bytes", "integer", "10485760",
               "bytes per attachment, decoded");
    mg_declare(ret, "max-total-bytes", "integer", "26214400",
               "bytes of all attachments together, decoded");
}

void exports_mailgate_plugin_data_handle(mg_session_t *session, mg_envelope_t *envelope,
                                         mg_message_t message, mg_verdict_t *ret) {
    mg_free_session(session);
    mg_free_envelope(envelope);
    int64_t max_count = mg_config_int("max-attachments", 10);
    int64_t max_each = mg_config_int("max-attachment-bytes", 10 * 1024 * 1024);
    int64_t max_total = mg_config_int("max-total-bytes", 25 * 1024 * 1024);

    mg_parts_t parts;
    mg_message_parts(message, &parts);
    int64_t count = 0;
    uint64_t total = 0;
    char text[256];
    text[0] = '\0';
    for (size_t i = 0; i < parts.len; i++) {
        const mg_part_t *part = &parts.ptr[i];
        if (!is_attachment(part)) {
            continue;
        }
        uint64_t size = decoded_size(part);
        count++;
        total += size;
        if (text[0] == '\0' && size > (uint64_t)max_each) {
            char *name = part->filename.is_some ? mg_string_cstr(&part->filename.val) : NULL;
            snprintf(text, sizeof text, "Attachment %s is too large: %llu bytes (at most %lld)",
                     name ? name : "(unnamed)", (unsigned long long)size, (long long)max_each);
            free(name);
        }
    }
    mg_parts_free(&parts);

    if (text[0] == '\0' && count > max_count) {
        snprintf(text, sizeof text, "Too many attachments: %lld (at most %lld)",
                 (long long)count, (long long)max_count);
    }
    if (text[0] == '\0' && total > (uint64_t)max_total) {
        snprintf(text, sizeof text, "Attachments too large: %llu bytes in all (at most %lld)",
                 (unsigned long long)total, (long long)max_total);
    }
    if (text[0] != '\0') {
        mg_verdict_reject(ret, 552, "5.3.4", text);
        return;
    }
    char value[24];
    snprintf(value, sizeof value, "%lld", (long long)count);
    mg_add_header("X-Attachment-Count", value);
    mg_verdict_continue(ret);
}
