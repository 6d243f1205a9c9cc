//! End-to-end tests: real HTTP to fulfilld and to a Stripe API double, on SQLite and,
//! when `TEST_DATABASE_URL` names a PostgreSQL server, on PostgreSQL too.

mod access;
mod admin;
mod backlog;
mod cancellation;
mod checkout_api;
mod concurrency;
mod connect;
mod disputes;
mod effects;
mod events;
mod faults;
mod fencing;
mod flood;
mod fulldisk;
mod helpers;
mod landing;
mod lanes;
mod metrics;
mod orders;
mod outage;
mod outbox;
mod processes;
mod properties;
mod readonly;
mod reconcile;
mod refund_operator;
mod refund_processes;
mod refunds;
mod release;
mod replicas;
mod reservations;
mod sandbox;
mod smtp;
mod warehouse;
mod webhook;
