// Package routers names the route of a request for httpsession's LockAuto
// when the application routes with chi or gorilla/mux rather than
// http.ServeMux.
//
// LockAuto learns per route ("METHOD ROUTE") which requests never modify
// the session and stops locking them. By default ROUTE is the ServeMux
// pattern (r.Pattern) or else the URL path, so behind another router
// /items/1 and /items/2 would be two routes, each learned separately. Give
// one of the functions of this package to httpsession.Options.Route so that
// they are one route, "/items/{id}":
//
//	sessions, err := httpsession.Open(nodes, httpsession.Options{
//		Locking: httpsession.LockAuto,
//		Route:   routers.ChiRoute, // or routers.MuxRoute
//	})
//
// Options.Route is called once per request, when the handler first uses the
// session, with the request the handler passed to Manager.Session or else
// the request the middleware saw. So either install the middleware inside
// the router (chi's Use, gorilla/mux's Use) or, when the router runs inside
// the middleware, have handlers reach the session with Manager.Session(r).
// See the examples and README.md.
//
// This package lives in its own module so that the library's go.mod does
// not depend on any router.
package routers

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/mux"
)

// ChiRoute returns the full routing pattern chi matched for r, for example
// "/items/{id}", or "/api/items/{id}" for a route of a router mounted at
// "/api" (chi.RouteContext(r.Context()).RoutePattern()). It returns "" when
// r is nil or did not go through a chi router, and so does the pattern
// while chi has matched nothing yet (in a middleware of the top router,
// before routing); httpsession then falls back to r.Pattern or the URL
// path. In a middleware of a mounted router, before that router routed,
// it returns the mount pattern only ("/api/*").
//
// chi keeps its routing state in a pointer that the requests of all its
// middlewares and handlers share, so ChiRoute gives the full pattern from
// the request a middleware installed with Use saw, once the handler runs.
func ChiRoute(r *http.Request) string {
	if r == nil {
		return ""
	}
	rctx := chi.RouteContext(r.Context())
	if rctx == nil {
		return ""
	}
	return rctx.RoutePattern()
}

// MuxRoute returns the path template of the gorilla/mux route that matched
// r, for example "/items/{id}", or "/api/items/{id}" for a route of a
// subrouter made with PathPrefix("/api").Subrouter()
// (mux.CurrentRoute(r).GetPathTemplate()). It returns "" when r is nil,
// did not go through a gorilla/mux router, matched no route, or matched a
// route without a path (a Host- or Methods-only route); httpsession then
// falls back to r.Pattern or the URL path.
//
// gorilla/mux matches before it runs the middlewares installed with
// Router.Use, and hands them the request that carries the route, so
// MuxRoute works from the middleware's request.
func MuxRoute(r *http.Request) string {
	if r == nil {
		return ""
	}
	route := mux.CurrentRoute(r)
	if route == nil {
		return ""
	}
	tpl, err := route.GetPathTemplate()
	if err != nil {
		return ""
	}
	return tpl
}
