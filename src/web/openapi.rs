//! `GET /api/openapi.json`: the OpenAPI 3.1 description of the JSON routes and of the
//! webhooks fulfilld sends to the merchant's systems, generated from the very types the
//! handlers answer with and the effects send.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, HttpMethod, Object, PathsBuilder, Ref, Required, Type};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{access, api, landing, webhook};
use crate::domain::{AccessNotice, ShipmentNotice};

/// The document, with every route that answers JSON and every webhook fulfilld sends.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "fulfilld",
        version = env!("CARGO_PKG_VERSION"),
        description = "Fulfilment for Stripe Checkout: the JSON routes, and the webhooks \
                       fulfilld POSTs to `SHIPPING_WEBHOOK_URL` and `ACCESS_WEBHOOK_URL`."
    ),
    paths(
        landing::outcome_json,
        api::create,
        access::access,
        webhook::receive,
        serve,
    ),
    components(schemas(ShipmentNotice, AccessNotice)),
    modifiers(&Security, &Webhooks),
    tags(
        (name = "checkout", description = "Opening Checkout Sessions and reading their outcome"),
        (name = "access", description = "Whether a download link gives access"),
        (name = "stripe", description = "Stripe's webhooks"),
        (name = "meta", description = "This description"),
    )
)]
pub struct ApiDoc;

static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

/// This OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "get_openapi",
    tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1", body = serde_json::Value)),
)]
pub async fn serve() -> HttpResponse {
    HttpResponse::Ok().json(&*DOCUMENT)
}

/// Who may call what: `API_TOKEN` as a bearer token, or the storefront's CSRF token in
/// its header and its cookie together.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi
            .components
            .get_or_insert_with(utoipa::openapi::Components::new);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The `API_TOKEN` setting, for the merchant's back end"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "csrf_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRF-Token",
                "The storefront's CSRF token, from its page's `csrf-token` meta tag",
            ))),
        );
        components.add_security_scheme(
            "csrf_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::api::CSRF_COOKIE,
                "The storefront's CSRF cookie, holding the same token",
            ))),
        );
    }
}

/// The POSTs to `SHIPPING_WEBHOOK_URL` and `ACCESS_WEBHOOK_URL`, under OpenAPI 3.1's
/// top-level `webhooks`.
struct Webhooks;

impl Modify for Webhooks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let webhooks = PathsBuilder::new()
            .path(
                "shipping",
                outbound::<ShipmentNotice>(
                    "shipping_webhook",
                    "Ships an order, or asks to cancel it",
                    "POSTed to `SHIPPING_WEBHOOK_URL`: `shipment.requested` once a session \
                     with physical goods is fulfilled, `shipment.cancel_requested` when it \
                     is refunded in full after the warehouse was asked. A 404 or 410 to a \
                     cancellation of a shipment the warehouse never accepted means there is \
                     nothing to cancel.",
                ),
            )
            .path(
                "access",
                outbound::<AccessNotice>(
                    "access_webhook",
                    "Tells of grants given, taken back, suspended or restored",
                    "POSTed to `ACCESS_WEBHOOK_URL`, in order for each session: \
                     `access.granted` when a session with digital goods is fulfilled, \
                     `access.revoked` on a refund, `access.suspended` when a dispute is \
                     opened, `access.restored` when it is won.",
                ),
            )
            .build();
        openapi.webhooks = Some(webhooks);
    }
}

/// A webhook whose body is `T`, with the Standard Webhooks headers of every POST.
fn outbound<T: ToSchema>(operation_id: &str, summary: &str, description: &str) -> PathItem {
    let header = |name: &str, description: &str, required: Required| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Header)
            .required(required)
            .description(Some(description))
            .schema(Some(Object::with_type(Type::String)))
            .build()
    };
    let operation = OperationBuilder::new()
        .operation_id(Some(operation_id))
        .summary(Some(summary))
        .description(Some(description))
        .parameters(Some([
            header(
                "webhook-id",
                "The message's id, the same on every retry: deduplicate on it",
                Required::True,
            ),
            header(
                "Idempotency-Key",
                "The same as `webhook-id`",
                Required::True,
            ),
            header(
                "webhook-timestamp",
                "When this attempt was sent, in seconds since the Unix epoch",
                Required::True,
            ),
            header(
                "webhook-signature",
                "`v1,` and the base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` \
                 under `OUTBOUND_WEBHOOK_SECRET`'s key (Standard Webhooks); absent without \
                 the secret",
                Required::False,
            ),
        ]))
        .request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name(T::name()))),
                )
                .build(),
        ))
        .response(
            "2XX",
            ResponseBuilder::new().description("Received: the message is not sent again"),
        )
        .response(
            "default",
            ResponseBuilder::new().description(
                "408, 409, 429, 5xx and no answer are retried with backoff; any other \
                 4xx is a permanent failure, left for an operator",
            ),
        );
    PathItem::new(HttpMethod::Post, operation)
}
