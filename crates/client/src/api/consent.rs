//! Consent routes: accept, block or forget an account, list those decisions, report an
//! account or a message; and the moderators' routes (with the moderator token as the bearer
//! token instead of a session's).

use nightjar_api::{
    ConsentListResponse, ConsentState, MessageReportRequest, MessageReportResponse,
    ModerationReportsResponse, ReportRequest, SetConsentRequest,
};
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

    /// `POST /v1/reports/messages`.
    pub async fn report_message(&self, r: &MessageReportRequest) -> Result<MessageReportResponse> {
        self.call(Method::POST, "/v1/reports/messages", Some(r))
            .await
    }

    /// `GET /v1/moderation/reports?after=..&limit=..&unreviewed=..` (the token set with
    /// [`Api::set_token`] is the moderator token).
    pub async fn moderation_reports(
        &self,
        after: u64,
        limit: u32,
        unreviewed: bool,
    ) -> Result<ModerationReportsResponse> {
        self.call(
            Method::GET,
            &format!("/v1/moderation/reports?after={after}&limit={limit}&unreviewed={unreviewed}"),
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/moderation/reports/{report_id}/reviewed`.
    pub async fn mark_report_reviewed(&self, report_id: u64) -> Result<()> {
        self.call_raw(
            Method::POST,
            &format!("/v1/moderation/reports/{report_id}/reviewed"),
            None::<&()>,
        )
        .await
        .map(drop)
    }
}
