// `{{name}}`: counts events per event type in an SQL table, and answers the
// query `counts`. Replace it with your own logic.
import { defineProjection, failed, sql, value } from "../lib-js/reel.js";

export const { describe, setup, handle, query } = defineProjection({
  // Subscribe to fewer events with eventTypes: ["order.*"]; bump the version
  // when the logic changes, and reel rebuilds the read model.
  manifest: { name: "{{name}}", version: "1" },

  init() {
    sql.execute("CREATE TABLE IF NOT EXISTS event_counts (event_type TEXT PRIMARY KEY, count BIGINT NOT NULL)");
  },

  handle(event) {
    sql.execute(
      "INSERT INTO event_counts (event_type, count) VALUES ($1, 1) " +
        "ON CONFLICT (event_type) DO UPDATE SET count = event_counts.count + 1",
      [value.text(event.eventType)],
    );
  },

  query(name) {
    if (name !== "counts") throw failed(`unknown query \`${name}\`; try \`counts\``);
    return sql.query("SELECT event_type, count FROM event_counts ORDER BY event_type").toJson();
  },
});
