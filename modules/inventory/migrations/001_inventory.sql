-- Inventory items and sales of the connector. Stock never goes negative: the
-- CHECK is the last line of defence behind the conditional UPDATE of a sale.
CREATE TABLE inventory_items (
    id                  bigserial PRIMARY KEY,
    pharmacy_id         bigint NOT NULL REFERENCES pharmacies (id) ON DELETE CASCADE,
    sku                 text NOT NULL CHECK (length(sku) BETWEEN 1 AND 100),
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    quantity            integer NOT NULL CHECK (quantity >= 0),
    price               numeric(10,2) NOT NULL,
    -- NULL: the config default inventory.low_stock_threshold applies.
    low_stock_threshold integer CHECK (low_stock_threshold >= 0),
    extra_data          jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT inventory_items_pharmacy_sku UNIQUE (pharmacy_id, sku)
);
CREATE INDEX inventory_items_updated ON inventory_items (pharmacy_id, updated_at);

CREATE TABLE sales (
    id                bigserial PRIMARY KEY,
    pharmacy_id       bigint NOT NULL REFERENCES pharmacies (id) ON DELETE CASCADE,
    -- A sale outlives its item (the record of money taken stays).
    inventory_item_id bigint REFERENCES inventory_items (id) ON DELETE SET NULL,
    quantity          integer NOT NULL CHECK (quantity >= 1),
    total_price       numeric(10,2) NOT NULL,
    sale_time         timestamptz NOT NULL DEFAULT now(),
    extra_data        jsonb,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sales_pharmacy_time ON sales (pharmacy_id, sale_time);
CREATE INDEX sales_item ON sales (inventory_item_id);
