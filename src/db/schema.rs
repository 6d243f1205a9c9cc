//! The tables both backends share. Each backend's migrations create exactly these columns.

diesel::table! {
    checkout_sessions (id) {
        id -> Text,
        status -> Text,
        livemode -> Bool,
        currency -> Nullable<Text>,
        amount_total -> Nullable<BigInt>,
        customer_email -> Nullable<Text>,
        fulfilled_at -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
        shipping_address -> Nullable<Text>,
        account -> Nullable<Text>,
        payment_intent -> Nullable<Text>,
        amount_refunded -> BigInt,
    }
}

diesel::table! {
    line_items (session_id, line_number) {
        session_id -> Text,
        line_number -> Integer,
        id -> Text,
        price_id -> Nullable<Text>,
        product_id -> Nullable<Text>,
        description -> Text,
        quantity -> BigInt,
        currency -> Text,
        unit_amount -> Nullable<BigInt>,
        amount_subtotal -> BigInt,
        amount_total -> BigInt,
    }
}

diesel::table! {
    webhook_events (id) {
        id -> Text,
        event_type -> Text,
        session_id -> Text,
        livemode -> Bool,
        payload -> Text,
        received_at -> BigInt,
        processed_at -> Nullable<BigInt>,
        attempts -> Integer,
        next_attempt_at -> BigInt,
        last_error -> Nullable<Text>,
        dead_at -> Nullable<BigInt>,
        account -> Nullable<Text>,
        lease_until -> Nullable<BigInt>,
        claimed_by -> Nullable<Text>,
    }
}

diesel::table! {
    effects (id) {
        id -> BigInt,
        session_id -> Text,
        kind -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> BigInt,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        lease_until -> Nullable<BigInt>,
        lease -> BigInt,
        subject -> Text,
        body -> Nullable<Text>,
        traceparent -> Nullable<Text>,
    }
}

diesel::table! {
    inventory (sku) {
        sku -> Text,
        stock -> BigInt,
        oversold -> Bool,
        updated_at -> BigInt,
    }
}

diesel::table! {
    stock_movements (session_id, sku) {
        session_id -> Text,
        sku -> Text,
        quantity -> BigInt,
        applied_at -> Nullable<BigInt>,
        created_at -> BigInt,
        returned_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    reservations (id, sku) {
        id -> Text,
        sku -> Text,
        quantity -> BigInt,
        session_id -> Nullable<Text>,
        state -> Text,
        expires_at -> BigInt,
        created_at -> BigInt,
        settled_at -> Nullable<BigInt>,
        next_check_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    access_grants (session_id, sku) {
        session_id -> Text,
        sku -> Text,
        name -> Text,
        url -> Text,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        suspended_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    secrets (name) {
        name -> Text,
        value -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    admin_sessions (id) {
        id -> Text,
        token -> Text,
        csrf -> Text,
        expires_at -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    foreign_payment_intents (payment_intent) {
        payment_intent -> Text,
        checked_at -> BigInt,
    }
}

diesel::table! {
    refunds (id) {
        id -> Text,
        payment_intent -> Text,
        kind -> Text,
        amount -> BigInt,
        status -> Text,
        items -> Nullable<Text>,
        event_created -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    shipments (session_id) {
        session_id -> Text,
        status -> Text,
        items -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    item_returns (refund_id, sku) {
        refund_id -> Text,
        sku -> Text,
        session_id -> Text,
        quantity -> BigInt,
        asked -> Bool,
        returned_at -> Nullable<BigInt>,
        created_at -> BigInt,
    }
}

diesel::table! {
    sandbox_keys (id) {
        id -> Integer,
        api_key -> Text,
    }
}

diesel::table! {
    replicas (id) {
        id -> Text,
        started_at -> BigInt,
        seen_at -> BigInt,
        serves -> Bool,
    }
}

diesel::joinable!(line_items -> checkout_sessions (session_id));
diesel::joinable!(effects -> checkout_sessions (session_id));
diesel::joinable!(stock_movements -> checkout_sessions (session_id));
diesel::joinable!(access_grants -> checkout_sessions (session_id));
diesel::joinable!(shipments -> checkout_sessions (session_id));
diesel::joinable!(item_returns -> checkout_sessions (session_id));
diesel::allow_tables_to_appear_in_same_query!(
    checkout_sessions,
    line_items,
    webhook_events,
    effects,
    inventory,
    stock_movements,
    reservations,
    access_grants,
    shipments,
    item_returns,
    refunds,
    foreign_payment_intents,
    sandbox_keys,
    secrets,
    replicas,
    admin_sessions
);
