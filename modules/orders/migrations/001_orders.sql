-- Orders: the connector's pharmacy orders now; the My Pharma customer orders
-- that come later share this table (API.md "Paths shared by both families"),
-- which is why user_id exists already and is NULL for every connector order.
CREATE TABLE orders (
    id              bigserial PRIMARY KEY,
    pharmacy_id     bigint REFERENCES pharmacies (id) ON DELETE CASCADE,
    user_id         bigint REFERENCES users (id) ON DELETE SET NULL,
    order_reference text NOT NULL CHECK (length(order_reference) BETWEEN 1 AND 100),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN
                        ('pending', 'confirmed', 'processing', 'ready', 'completed',
                         'cancelled', 'rejected')),
    -- [{sku, name, quantity, price}], validated and normalised by the module
    -- (price a "12.50" string, quantity an integer).
    items           jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(items) = 'array'),
    total_amount    numeric(10, 2) NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Every order belongs to a pharmacy, a customer, or both.
    CHECK (pharmacy_id IS NOT NULL OR user_id IS NOT NULL)
);
-- order_reference is unique per pharmacy (the handlers map a violation of this
-- index to a 400 on order_reference).
CREATE UNIQUE INDEX orders_pharmacy_reference ON orders (pharmacy_id, order_reference);
CREATE INDEX orders_pharmacy_created ON orders (pharmacy_id, created_at);
CREATE INDEX orders_user ON orders (user_id) WHERE user_id IS NOT NULL;
