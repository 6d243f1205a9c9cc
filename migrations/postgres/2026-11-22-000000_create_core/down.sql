DROP TABLE effects;
DROP TABLE webhook_events;
DROP TABLE line_items;
DROP TABLE checkout_sessions;
