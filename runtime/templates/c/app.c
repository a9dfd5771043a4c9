/* `{{name}}`: counts events per event type in an SQL table, and answers the
 * query `counts`. Replace it with your own logic. */
#include "reel_host.h"

/* No event types: every event. Bump the version when the logic changes, and
 * reel rebuilds the read model. */
const reel_manifest reel_projection_manifest = {.name = "{{name}}", .version = "1"};

int reel_projection_init(reel_buf *err) {
    (void)err;
    reel_sql_execute("CREATE TABLE IF NOT EXISTS event_counts (event_type TEXT PRIMARY KEY, count BIGINT NOT NULL)",
                     NULL);
    return REEL_OK;
}

int reel_projection_handle(const reel_event *event, reel_buf *err) {
    (void)err;
    reel_params p = {.len = 0};
    reel_param_text(&p, event->event_type);
    reel_sql_execute("INSERT INTO event_counts (event_type, count) VALUES ($1, 1) "
                     "ON CONFLICT (event_type) DO UPDATE SET count = event_counts.count + 1",
                     &p);
    return REEL_OK;
}

int reel_projection_query(reel_str name, const reel_json *args, reel_buf *out, reel_buf *err) {
    (void)args;
    if (!reel_str_eq(name, "counts")) {
        reel_buf_puts(err, "unknown query; try `counts`");
        return REEL_FAILED;
    }
    reel_projection_sql_rows_t rows;
    if (reel_sql_query("SELECT event_type, count FROM event_counts ORDER BY event_type", NULL, &rows, err) != REEL_OK)
        return REEL_FAILED;
    reel_rows_to_json(out, &rows);
    reel_rows_free(&rows);
    return REEL_OK;
}
