//! The merchant's catalog (`CATALOG`, TOML): which Stripe prices are which goods.
//!
//! A line item whose price (or product) is in the catalog is fulfilled as its kind says:
//! physical goods move stock and ship, digital goods grant access. Anything else is a
//! plain service: recorded and receipted, nothing more.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use serde::Deserialize;
use toml::Spanned;

use crate::domain::{AccessGrant, GrantStatus, LineItem, SessionId, ShipmentItem};

/// What a product is, and so what fulfilling it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Has stock and is shipped.
    Physical,
    /// Grants access through a link.
    Digital,
}

/// One `[[product]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    /// Stripe Price id.
    pub price: String,
    /// Stripe Product id, matched when the price is not.
    #[serde(default)]
    pub product: Option<String>,
    pub sku: String,
    pub kind: Kind,
    /// Starting stock, physical goods only.
    #[serde(default)]
    pub stock: i64,
    #[serde(default)]
    pub name: Option<String>,
    /// Storefront price in minor units.
    #[serde(default)]
    pub unit_amount: Option<i64>,
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Digital goods only: `{sku}` and `{session_id}` are filled in.
    #[serde(default)]
    pub access_url: Option<String>,
}

fn default_currency() -> String {
    "usd".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    product: Vec<Spanned<Product>>,
}

/// What fulfilling a cart does beyond recording it, worked out before the transaction.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Physical goods, one entry per SKU: both the stock movements and the shipment.
    pub physical: Vec<ShipmentItem>,
    pub grants: Vec<AccessGrant>,
}

/// The loaded catalog.
#[derive(Debug, Default)]
pub struct Catalog {
    products: Vec<Product>,
    /// Prices already reported as missing from the catalog, so each is logged once.
    reported: Mutex<HashSet<String>>,
}

impl Catalog {
    /// Reads and checks a catalog file; the error names the line and the field at fault.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("could not read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|problem| format!("{}: {problem}", path.display()))
    }

    /// Parses catalog text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let file: CatalogFile = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|span| line_of(span.start)).unwrap_or(1);
            format!("line {at}: {}", e.message().trim())
        })?;
        let mut products = Vec::with_capacity(file.product.len());
        let mut prices = HashSet::new();
        for spanned in file.product {
            let line = line_of(spanned.span().start);
            let product = spanned.into_inner();
            product
                .check()
                .map_err(|problem| format!("line {line}: product {:?}: {problem}", product.sku))?;
            if !prices.insert(product.price.clone()) {
                return Err(format!(
                    "line {line}: price: {} is listed twice",
                    product.price
                ));
            }
            products.push(product);
        }
        Ok(Self {
            products,
            reported: Mutex::default(),
        })
    }

    pub fn products(&self) -> &[Product] {
        &self.products
    }

    /// The product sold at Stripe Price `price`.
    pub fn by_price(&self, price: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.price == price)
    }

    /// The product of SKU `sku`.
    pub fn by_sku(&self, sku: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.sku == sku)
    }

    /// The product a line item is, by price first, then by product.
    pub fn find(&self, item: &LineItem) -> Option<&Product> {
        let by_price = item
            .price_id
            .as_deref()
            .and_then(|price| self.by_price(price));
        by_price.or_else(|| {
            let product_id = item.product_id.as_deref()?;
            self.products
                .iter()
                .find(|p| p.product.as_deref() == Some(product_id))
        })
    }

    /// What fulfilling `items` for `session` does: stock and shipping for physical goods,
    /// access for digital ones. Items not in the catalog are plain services.
    pub fn plan(&self, session: &SessionId, items: &[LineItem]) -> Plan {
        let mut physical: BTreeMap<&str, ShipmentItem> = BTreeMap::new();
        let mut grants: BTreeMap<&str, AccessGrant> = BTreeMap::new();
        for item in items {
            let Some(product) = self.find(item) else {
                self.report_unknown(item);
                continue;
            };
            let name = product
                .name
                .clone()
                .unwrap_or_else(|| item.description.clone());
            match product.kind {
                Kind::Physical => {
                    physical
                        .entry(&product.sku)
                        .or_insert_with(|| ShipmentItem {
                            sku: product.sku.clone(),
                            name,
                            quantity: 0,
                        })
                        .quantity += item.quantity;
                }
                Kind::Digital => {
                    grants.entry(&product.sku).or_insert_with(|| AccessGrant {
                        sku: product.sku.clone(),
                        name,
                        url: product.access_url_for(session),
                        status: GrantStatus::Active,
                    });
                }
            }
        }
        Plan {
            physical: physical.into_values().collect(),
            grants: grants.into_values().collect(),
        }
    }

    fn report_unknown(&self, item: &LineItem) {
        let key = item
            .price_id
            .clone()
            .unwrap_or_else(|| item.description.clone());
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if reported.insert(key) {
            tracing::info!(
                price.id = item.price_id.as_deref().unwrap_or("none"),
                "price not in the catalog; fulfilled as a service"
            );
        }
    }
}

impl Product {
    /// What customers call it: its name, or its SKU when it has none.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.sku.clone())
    }

    fn check(&self) -> Result<(), String> {
        // A refund's `items` names it as `SKU:QTY,…`.
        let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
        if self.sku.is_empty() || self.sku.len() > 64 || !self.sku.bytes().all(plain) {
            return Err(format!(
                "sku: {:?} is not 1 to 64 letters, digits, '-', '_' or '.'",
                self.sku
            ));
        }
        if self.stock < 0 {
            return Err("stock: must not be negative".into());
        }
        if !self.price.starts_with("price_") && !self.price.starts_with("plan_") {
            return Err(format!("price: {:?} is not a Stripe Price id", self.price));
        }
        match (self.kind, &self.access_url) {
            (Kind::Physical, Some(_)) => {
                Err("access_url: only digital products grant access".into())
            }
            (Kind::Digital, None) => Err("access_url: required for a digital product".into()),
            (Kind::Digital, _) if self.stock != 0 => {
                Err("stock: only physical products have stock".into())
            }
            (Kind::Digital, Some(url)) => check_access_url(url),
            (Kind::Physical, None) => Ok(()),
        }?;
        if self.unit_amount.is_some_and(|amount| amount < 0) {
            return Err("unit_amount: must not be negative".into());
        }
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_lowercase()) {
            return Err(format!(
                "currency: {:?} is not a lowercase ISO code like \"usd\"",
                self.currency
            ));
        }
        Ok(())
    }

    /// The access link for one order.
    pub fn access_url_for(&self, session: &SessionId) -> String {
        self.access_url
            .as_deref()
            .unwrap_or_default()
            .replace("{sku}", &self.sku)
            .replace("{session_id}", session.as_str())
    }
}

fn check_access_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err("access_url: expected an http:// or https:// URL".into());
    }
    let rest = url
        .replace("{sku}", "")
        .replace("{session_id}", "")
        .replace("{token}", "");
    if rest.contains('{') || rest.contains('}') {
        return Err("access_url: the only placeholders are {sku}, {session_id} and {token}".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../catalog.toml");

    fn item(price: &str, quantity: i64) -> LineItem {
        LineItem {
            id: format!("li_{price}"),
            price_id: Some(price.to_owned()),
            product_id: None,
            description: "Stripe's description".into(),
            quantity,
            currency: "usd".into(),
            unit_amount: Some(100),
            amount_subtotal: 100 * quantity,
            amount_total: 100 * quantity,
        }
    }

    #[test]
    fn the_example_catalog_plans_stock_shipping_and_access() {
        let catalog = Catalog::parse(EXAMPLE).unwrap();
        let tee = &catalog.products()[0];
        let ebook = catalog
            .products()
            .iter()
            .find(|p| p.kind == Kind::Digital)
            .unwrap();
        let id = SessionId::parse("cs_test_plan").unwrap();
        let plan = catalog.plan(
            &id,
            &[
                item(&tee.price, 2),
                item(&ebook.price, 1),
                item(&tee.price, 1),
                item("price_unknown", 1),
            ],
        );
        assert_eq!(plan.physical.len(), 1);
        assert_eq!(
            (plan.physical[0].sku.as_str(), plan.physical[0].quantity),
            (tee.sku.as_str(), 3)
        );
        assert_eq!(plan.grants.len(), 1);
        assert!(plan.grants[0].url.contains("cs_test_plan"));
        assert!(plan.grants[0].url.contains(&ebook.sku));
    }

    #[test]
    fn a_malformed_catalog_names_the_line_and_field() {
        let unknown = "[[product]]\nprice = \"price_1\"\nsku = \"A\"\nkind = \"physical\"\ncolour = \"red\"\n";
        let error = Catalog::parse(unknown).unwrap_err();
        assert!(error.starts_with("line 5:"), "{error}");
        assert!(error.contains("colour"), "{error}");

        let digital = "[[product]]\nprice = \"price_1\"\nsku = \"A\"\nkind = \"digital\"\n\n[[product]]\nprice = \"price_2\"\nsku = \"B\"\nkind = \"digital\"\naccess_url = \"https://x/{nope}\"\n";
        let error = Catalog::parse(digital).unwrap_err();
        assert!(
            error.starts_with("line 1: product \"A\": access_url"),
            "{error}"
        );

        let kind = "[[product]]\nprice = \"price_1\"\nsku = \"A\"\nkind = \"vegetable\"\n";
        let error = Catalog::parse(kind).unwrap_err();
        assert!(error.starts_with("line 4:"), "{error}");
    }
}
