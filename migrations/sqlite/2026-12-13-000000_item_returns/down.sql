DROP TABLE IF EXISTS item_returns;
