DROP TABLE item_returns;
