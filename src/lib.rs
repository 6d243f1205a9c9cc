//! fulfilld: exactly-once fulfillment for Stripe Checkout.

pub mod access;
pub mod actors;
pub mod bench;
pub mod catalog;
pub mod checkout;
pub mod cli;
pub mod commands;
pub mod configuration;
pub mod db;
pub mod domain;
pub mod effects;
pub mod fulfillment;
pub mod inbox;
pub mod metrics;
pub mod reconcile;
pub mod refunding;
pub mod replicas;
pub mod reservations;
pub mod retention;
pub mod retry;
pub mod reversal;
pub mod sandbox;
pub mod startup;
pub mod stripe;
pub mod telemetry;
pub mod web;
