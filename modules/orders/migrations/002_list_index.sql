-- Lists are read per pharmacy in id order and counted per pharmacy (see
-- inventory's 002_list_indexes.sql).
CREATE INDEX orders_pharmacy_id ON orders (pharmacy_id, id);
