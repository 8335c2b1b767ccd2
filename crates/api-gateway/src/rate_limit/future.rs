//! The rate-limit layer's response future: the inner service's answer, or an immediate 429.

use std::future::Future;
use std::pin::Pin;

use axum::response::Response;

/// Boxed because admission may await a Redis lease before calling the inner service.
pub type ResponseFuture<E> = Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>;
