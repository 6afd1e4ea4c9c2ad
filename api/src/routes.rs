//! `Routes`: an axum `Router` that remembers which method and path template each route has, so
//! the permission table can be checked against every route the service serves.

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, patch, post};

/// A route: its method and its path template (`/v1/licenses/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// A router and the list of its routes.
pub struct Routes<S = ()> {
    router: Router<S>,
    list: Vec<Route>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes {
            router: Router::new(),
            list: Vec::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::GET, path, get(handler))
    }

    pub fn post<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::POST, path, post(handler))
    }

    pub fn patch<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::PATCH, path, patch(handler))
    }

    pub fn delete<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.on(Method::DELETE, path, delete(handler))
    }

    /// A route built by hand (to give it a layer of its own): `route` must answer `method`
    /// only.
    pub fn on(mut self, method: Method, path: &'static str, route: MethodRouter<S>) -> Self {
        self.list.push(Route { method, path });
        // axum merges the method routers of one path.
        self.router = self.router.route(path, route);
        self
    }

    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.list.extend(other.list);
        self
    }

    /// Applies `f` to the router (layers, state); the routes stay the same.
    pub fn map<S2>(self, f: impl FnOnce(Router<S>) -> Router<S2>) -> Routes<S2> {
        Routes {
            router: f(self.router),
            list: self.list,
        }
    }

    pub fn with_state<S2>(self, state: S) -> Routes<S2> {
        self.map(|router| router.with_state(state))
    }

    pub fn list(&self) -> &[Route] {
        &self.list
    }

    pub fn into_parts(self) -> (Router<S>, Vec<Route>) {
        (self.router, self.list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_remember_each_method_and_path() {
        let routes: Routes = Routes::new()
            .get("/a", || async { "a" })
            .post("/a", || async { "b" })
            .merge(Routes::new().delete("/b/{id}", || async { "c" }));
        let listed: Vec<String> = routes.list().iter().map(|r| r.to_string()).collect();
        assert_eq!(listed, ["GET /a", "POST /a", "DELETE /b/{id}"]);
    }
}
