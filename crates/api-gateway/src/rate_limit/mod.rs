//! Tower middleware that admits or rejects ingest requests *before their body is read*:
//! shedding must cost next to nothing. Shape of tower's `load_shed`: always ready, decide in
//! `call`, answer a typed rejection (mapped to 429 in [`error`]) instead of calling inner.
//! The admitted request carries its [`Permit`] so the handler can charge the rest of a batch
//! after parsing.

pub mod error;
pub mod future;

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use crate::backpressure::{Backpressure, Permit};
pub use error::RateLimited;
pub use future::ResponseFuture;

/// Wraps routes with the backpressure admission check.
#[derive(Clone)]
pub struct RateLimitLayer {
    backpressure: Arc<Backpressure>,
}

impl RateLimitLayer {
    pub fn new(backpressure: Arc<Backpressure>) -> Self {
        Self { backpressure }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            backpressure: self.backpressure.clone(),
        }
    }
}

/// The rate-limit service: admits through backpressure, then calls `inner`.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    backpressure: Arc<Backpressure>,
}

impl<S> Service<Request> for RateLimit<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // The clone is ready only if `self.inner` was; swap so the ready one serves.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let backpressure = self.backpressure.clone();
        Box::pin(async move {
            match backpressure.admit_first().await {
                Ok(permit) => {
                    request.extensions_mut().insert::<Permit>(permit);
                    inner.call(request).await
                }
                Err(limited) => {
                    crate::metrics::event_rejected(limited.reason.as_str());
                    Ok(RateLimited(limited).into_response())
                }
            }
        })
    }
}
