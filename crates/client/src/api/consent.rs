//! Consent routes: accept, block or forget an account, list those decisions, report.

use nightjar_api::{ConsentListResponse, ConsentState, ReportRequest, SetConsentRequest};
use reqwest::Method;

use super::{Api, segment};
use crate::error::Result;

impl Api {
    /// `GET /v1/consent`.
    pub async fn consent(&self) -> Result<ConsentListResponse> {
        self.call(Method::GET, "/v1/consent", None::<&()>).await
    }

    /// `PUT /v1/consent/{username}`.
    pub async fn set_consent(&self, username: &str, state: ConsentState) -> Result<()> {
        self.call_raw(
            Method::PUT,
            &format!("/v1/consent/{}", segment(username)),
            Some(&SetConsentRequest { state }),
        )
        .await
        .map(drop)
    }

    /// `DELETE /v1/consent/{username}`.
    pub async fn forget_consent(&self, username: &str) -> Result<()> {
        self.call_raw(
            Method::DELETE,
            &format!("/v1/consent/{}", segment(username)),
            None::<&()>,
        )
        .await
        .map(drop)
    }

    /// `POST /v1/reports`.
    pub async fn report(&self, r: &ReportRequest) -> Result<()> {
        self.call_raw(Method::POST, "/v1/reports", Some(r))
            .await
            .map(drop)
    }
}
