-- Lists are read per pharmacy in id order (the default ordering) and counted
-- per pharmacy: without these, a page of one pharmacy walked the primary key
-- over every pharmacy's rows (bench/connector.sh: 185 ms of database CPU per
-- page with 100 pharmacies x 10,000 items).
CREATE INDEX inventory_items_pharmacy_id ON inventory_items (pharmacy_id, id);
CREATE INDEX sales_pharmacy_id ON sales (pharmacy_id, id);
