//! Extractors whose rejections are our JSON errors, so a handler reads as the thing it does.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use std::collections::HashMap;
use std::marker::PhantomData;

use super::{ApiError, Caller};
use crate::access::Scope;
use crate::model::SessionId;

/// `axum::Json` with rejections mapped to 400/413/415 JSON errors.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| ApiJson(v))
            .map_err(ApiError::from)
    }
}

/// `axum::extract::Query` with a JSON 400 on bad parameters.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(ApiError::from)
    }
}

/// The `:sessionId` path segment, validated, of a route that needs the scope `N` on it: the
/// caller's key is checked here (see [`Caller::may`]), so a handler cannot reach a session
/// by its path without saying what it does with it.
pub struct SessionPath<N: Needs>(pub SessionId, pub PhantomData<N>);

/// The scope a [`SessionPath`] needs: one of the types in [`needs`].
pub trait Needs {
    const SCOPE: Scope;
}

/// The scopes, as types for [`SessionPath`].
pub mod needs {
    use super::{Needs, Scope};

    pub struct Read;
    pub struct Send;
    pub struct Manage;
    pub struct Webhooks;

    impl Needs for Read {
        const SCOPE: Scope = Scope::Read;
    }
    impl Needs for Send {
        const SCOPE: Scope = Scope::Send;
    }
    impl Needs for Manage {
        const SCOPE: Scope = Scope::Manage;
    }
    impl Needs for Webhooks {
        const SCOPE: Scope = Scope::Webhooks;
    }
}

impl<S: std::marker::Send + Sync, N: Needs> FromRequestParts<S> for SessionPath<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(params) =
            axum::extract::Path::<HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(ApiError::from)?;
        let raw = params
            .get("session_id")
            .ok_or_else(|| ApiError::bad_request("invalid_path", "no session id in the path"))?;
        let id = SessionId::parse(raw).map_err(ApiError::invalid_session_id)?;
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.may(&id, N::SCOPE)?;
        Ok(SessionPath(id, PhantomData))
    }
}
