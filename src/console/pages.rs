//! The console's pages: login, search, a person's 360° page, segments
//! (list, detail with size over time and a consent-aware CSV download, the
//! builder), the voice of the customer and operations. Each handler checks
//! the session first, reads through [`super::data`] and renders with maud.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::auth::{self, User};
use super::charts::{self, Point};
use super::data::{self, Grid};
use super::{Console, builder, failure};
use crate::pgwire::auth::Role;
use crate::privacy::people::People;

const CSS: &str = include_str!("console.css");

pub(super) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/search") }))
        .route("/static/console.css", get(css))
        .route("/static/icon.svg", get(icon))
        .route("/favicon.ico", get(icon))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/search", get(search))
        .route("/person/{id}", get(person))
        .route("/person/{id}/block", post(block))
        .route("/segments", get(segments))
        .route("/segments/new", get(builder_page).post(builder_post))
        .route("/segments/{name}", get(segment))
        .route("/segments/{name}/download", get(download))
        .route("/voc", get(voc))
        .route("/operations", get(operations))
}

const ICON: &str = "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'><circle cx='8' cy='8' r='7' fill='#1f5fbf'/></svg>";

async fn icon() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("image/svg+xml"),
        )],
        ICON,
    )
        .into_response()
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/css"))],
        CSS,
    )
        .into_response()
}

/// A handler's signed-in user; without a session, the answer sends them
/// to the login form.
impl axum::extract::FromRequestParts<Arc<Console>> for User {
    type Rejection = Redirect;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        console
            .auth
            .user(&parts.headers)
            .ok_or_else(|| Redirect::to("/login"))
    }
}

/// A failed read as a page (the message redacted of values).
fn broken(e: crate::error::Error) -> Response {
    tracing::warn!("console: {}", crate::redact::values(&e.to_string()));
    failure(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
}

fn layout(title: &str, user: Option<&User>, body: Markup) -> Html<String> {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Panorama" }
                link rel="stylesheet" href="/static/console.css";
                link rel="icon" href="/static/icon.svg" type="image/svg+xml";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        a.brand href="/search" { "Panorama" }
                        @if user.is_some() {
                            a href="/search" { "People" }
                            a href="/segments" { "Segments" }
                            a href="/voc" { "Voice of the customer" }
                            a href="/operations" { "Operations" }
                        }
                    }
                    @if let Some(user) = user {
                        form.logout method="post" action="/logout" {
                            span.who { (user.name) " (" (user.role.name()) ")" }
                            input type="hidden" name="csrf" value=(user.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    Html(page.into_string())
}

pub(super) fn error_page(status: StatusCode, message: &str) -> Html<String> {
    layout(
        status.canonical_reason().unwrap_or("Error"),
        None,
        html! { p.error role="alert" { (message) } p { a href="/search" { "Back" } } },
    )
}

fn table(grid: &Grid) -> Markup {
    html! {
        @if grid.rows.is_empty() {
            p.empty { "None." }
        } @else {
            div.scroll {
                table {
                    thead { tr { @for c in &grid.columns { th scope="col" { (c) } } } }
                    tbody {
                        @for row in &grid.rows {
                            tr { @for v in row { td { (v) } } }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginForm {
    name: String,
    password: String,
}

async fn login_page(State(console): State<Arc<Console>>) -> Response {
    if console.auth.open() {
        return Redirect::to("/search").into_response();
    }
    login_form(None).into_response()
}

fn login_form(error: Option<&str>) -> Html<String> {
    layout(
        "Sign in",
        None,
        html! {
            @if let Some(error) = error { p.error role="alert" { (error) } }
            form.login method="post" action="/login" {
                label for="name" { "User" }
                input id="name" name="name" autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
            p.hint { "The users and passwords of the PostgreSQL endpoint (panorama.toml [[users]])." }
        },
    )
}

async fn login(State(console): State<Arc<Console>>, Form(form): Form<LoginForm>) -> Response {
    match console.auth.login(&form.name, &form.password).await {
        Some(token) => (
            [(header::SET_COOKIE, auth::session_cookie(&token))],
            Redirect::to("/search"),
        )
            .into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            login_form(Some("Wrong user or password.")),
        )
            .into_response(),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CsrfForm {
    csrf: String,
}

/// Whether a form's CSRF token is the session's.
fn csrf_ok(user: &User, sent: &str) -> bool {
    !sent.is_empty() && sent == user.csrf
}

fn forbidden_csrf() -> Response {
    failure(
        StatusCode::FORBIDDEN,
        "This form has expired or did not come from this console: reload the page.",
    )
}

async fn logout(
    State(console): State<Arc<Console>>,
    user: User,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !csrf_ok(&user, &form.csrf) {
        return forbidden_csrf();
    }
    console.auth.logout(&headers);
    (
        [(header::SET_COOKIE, auth::expired_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SearchQuery {
    q: String,
    #[serde(rename = "type")]
    id_type: String,
}

async fn search(
    State(console): State<Arc<Console>>,
    user: User,
    Query(query): Query<SearchQuery>,
) -> Response {
    if !query.id_type.is_empty() && console.identity.id_type(&query.id_type).is_none() {
        return failure(StatusCode::BAD_REQUEST, "Unknown identifier type.");
    }
    let found = match data::find(&console, Some(&query.id_type), &query.q).await {
        Ok(found) => found,
        Err(e) => return broken(e),
    };
    if let [only] = found.as_slice() {
        return Redirect::to(&format!("/person/{only}")).into_response();
    }
    let types: Vec<&str> = console
        .identity
        .types
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    layout(
        "Find a person",
        Some(&user),
        html! {
            form.search method="get" action="/search" role="search" {
                label for="q" { "Email, phone, cookie, user id, customer id or profile id" }
                input id="q" name="q" value=(query.q) autofocus;
                label for="type" { "Type" }
                select id="type" name="type" {
                    option value="" { "any" }
                    @for t in &types {
                        option value=(t) selected[query.id_type == *t] { (t) }
                    }
                }
                button type="submit" { "Find" }
            }
            @if !query.q.is_empty() {
                @if found.is_empty() {
                    p.empty role="status" { "Nobody has this identifier." }
                } @else {
                    p role="status" { (found.len()) " profiles have it:" }
                    ul { @for id in &found { li { a href={ "/person/" (id) } { (id) } } } }
                }
            }
        },
    )
    .into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PageQuery {
    page: usize,
}

async fn person(
    State(console): State<Arc<Console>>,
    user: User,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    if uuid::Uuid::parse_str(&id).is_err() {
        return failure(StatusCode::NOT_FOUND, "No such profile.");
    }
    match person_page(&console, &user, &id, query.page).await {
        Ok(Some(page)) => page.into_response(),
        Ok(None) => failure(StatusCode::NOT_FOUND, "No such profile."),
        Err(e) => broken(e),
    }
}

async fn person_page(
    console: &Console,
    user: &User,
    id: &str,
    page: usize,
) -> crate::error::Result<Option<Html<String>>> {
    let ctx = console.session(user.role);
    let profile = data::grid(
        ctx,
        "SELECT * FROM cdp.profiles WHERE profile_id = $1",
        &[id],
    )
    .await?;
    if profile.rows.is_empty() {
        return Ok(None);
    }
    let shown = data::grid(
        ctx,
        "SELECT id_type, id_value, first_seen, last_seen FROM cdp.identity_links \
         WHERE profile_id = $1 ORDER BY id_type, first_seen",
        &[id],
    )
    .await?;
    let ids = data::identifiers(console, id).await?;
    let people = Arc::new(People::resolve(&console.admin, &console.identity, &ids).await?);
    let (moments, more) = data::timeline(console, &people, user.role, page).await?;
    let links = data::links(console, &people, &ids).await?;
    let merges = data::grid(
        ctx,
        "SELECT refreshed_at, kind, from_profile_id, to_profile_id, cause_type, cause_value \
         FROM cdp.profile_merges WHERE from_profile_id = $1 OR to_profile_id = $1 ORDER BY refreshed_at DESC",
        &[id],
    )
    .await?;
    let rfm = data::grid(
        ctx,
        "SELECT segment, r, f, m, recency_days, frequency, monetary FROM analytics.rfm WHERE profile_id = $1",
        &[id],
    )
    .await?;
    let segments = member_of(console, user.role, id).await?;
    let requests = privacy_requests(console, user.role, &ids).await?;
    let survivors = survivorship(console, &people, &profile).await?;
    let traits: Vec<(String, String)> = profile
        .columns
        .iter()
        .zip(&profile.rows[0])
        .map(|(c, v)| (c.clone(), v.clone()))
        .collect();
    let consents: Vec<&(String, String)> = traits
        .iter()
        .filter(|(c, _)| c.starts_with("consent_"))
        .collect();
    let timeline_tables: BTreeMap<&str, usize> =
        moments.iter().fold(BTreeMap::new(), |mut m, x| {
            *m.entry(x.table).or_default() += 1;
            m
        });
    let body = html! {
        p.lede { "Profile " code { (id) } }
        section aria-labelledby="ids" {
            h2 id="ids" { "Identifiers" }
            (table(&shown))
        }
        section aria-labelledby="traits" {
            h2 id="traits" { "Traits" }
            div.scroll { table {
                thead { tr { th scope="col" { "trait" } th scope="col" { "value" } th scope="col" { "won from" } } }
                tbody {
                    @for (c, v) in traits.iter().filter(|(c, v)| !v.is_empty() && !c.starts_with("consent_")) {
                        tr { th scope="row" { (c) } td data-trait=(c) { (v) } td { (survivors.get(c.as_str()).map(String::as_str).unwrap_or("")) } }
                    }
                }
            } }
        }
        section aria-labelledby="consent" {
            h2 id="consent" { "Consent" }
            ul { @for (c, v) in &consents {
                li { (c.trim_start_matches("consent_")) ": " strong { @if v.is_empty() { "no answer" } @else { (v) } } }
            } }
            p.hint { "The records behind each answer are in the timeline (consents, and events carrying an SDK's consent)." }
        }
        section aria-labelledby="segments" {
            h2 id="segments" { "Segments and RFM" }
            @if rfm.rows.is_empty() { p.empty { "No RFM cell (no net order)." } } @else {
                p { "RFM: " strong { (rfm.rows[0][0]) } " (R " (rfm.rows[0][1]) ", F " (rfm.rows[0][2]) ", M " (rfm.rows[0][3]) ")" }
            }
            @if segments.is_empty() { p.empty { "In no saved segment." } } @else {
                ul { @for s in &segments { li { a href={ "/segments/" (s) } { (s) } } } }
            }
        }
        (graph_section(user, id, &links, &shown))
        section aria-labelledby="requests" {
            h2 id="requests" { "Privacy requests" }
            p.hint { "Requests (access, proof, suppression, erasure) made for one of these identifiers, found by their salted hashes." }
            (table(&requests))
        }
        section aria-labelledby="merges" {
            h2 id="merges" { "Merges and splits" }
            (table(&merges))
        }
        section aria-labelledby="timeline" {
            h2 id="timeline" { "Timeline" }
            p.hint { @for (t, n) in &timeline_tables { (n) " from raw." (t) " " } }
            @if moments.is_empty() { p.empty { "Nothing yet." } } @else {
                ol.timeline {
                    @for m in &moments {
                        li { time { (m.at) } " " strong { (m.what) } " " span.table { "raw." (m.table) } br; span.detail { (m.detail) } }
                    }
                }
            }
            nav.pages aria-label="Timeline pages" {
                @if page > 0 { a href={ "/person/" (id) "?page=" (page - 1) } { "Newer" } }
                @if more { a href={ "/person/" (id) "?page=" (page + 1) } { "Older" } }
            }
        }
    };
    Ok(Some(layout("Person", Some(user), body)))
}

/// "Why these are one person": the identity graph (identifiers as nodes,
/// the records that linked them as edges, refused links apart), each
/// identifier as `user`'s role may read it (`shown`), and for an admin the
/// forms that block a value or a link.
fn graph_section(user: &User, id: &str, links: &data::Links, shown: &Grid) -> Markup {
    // Node labels: the identifier as the role may read it.
    let labels: Vec<String> = links
        .nodes
        .iter()
        .map(|(t, v)| {
            let value = shown
                .rows
                .iter()
                .find(|r| r[0] == *t && (user.role == Role::Analyst || r[1] == *v))
                .map(|r| r[1].clone())
                .unwrap_or_default();
            format!("{t}: {value}")
        })
        .collect();
    let edges: Vec<((usize, usize), String)> = links
        .edges
        .iter()
        .map(|(pair, tables)| {
            let why = tables
                .iter()
                .map(|(t, n)| format!("{n} row(s) of raw.{t}"))
                .collect::<Vec<_>>()
                .join(", ");
            (*pair, why)
        })
        .collect();
    let refused: Vec<(usize, String)> = links
        .refused
        .iter()
        .map(|(n, other, kind)| (*n, format!("{kind} (to a {other})")))
        .collect();
    html! {
    section aria-labelledby="graph" {
        h2 id="graph" { "Why these are one person" }
        (charts::graph(&labels, &edges, &refused))
        ul.edges {
            @for ((a, b), why) in &edges {
                li { (labels[*a]) " — " (labels[*b]) ": " (why) }
            }
            @for (n, why) in &refused {
                li.refused { (labels[*n]) ": refused link, " (why) }
            }
        }
        @if user.role == Role::Admin {
            h3 { "Block" }
            p.hint { "Blocking a value (or a link) takes effect at the next refresh." }
            @for (t, v) in &links.nodes {
                form.inline method="post" action={ "/person/" (id) "/block" } {
                    input type="hidden" name="csrf" value=(user.csrf);
                    input type="hidden" name="id_type" value=(t);
                    input type="hidden" name="id_value" value=(v);
                    button type="submit" { "Block " (t) " " (v) }
                }
            }
            @for ((a, b), _) in &edges {
                @let ((t, v), (ot, ov)) = (&links.nodes[*a], &links.nodes[*b]);
                form.inline method="post" action={ "/person/" (id) "/block" } {
                    input type="hidden" name="csrf" value=(user.csrf);
                    input type="hidden" name="id_type" value=(t);
                    input type="hidden" name="id_value" value=(v);
                    input type="hidden" name="other_type" value=(ot);
                    input type="hidden" name="other_value" value=(ov);
                    button type="submit" { "Block the link " (t) " " (v) " — " (ot) " " (ov) }
                }
            }
        }
    }
    }
}

/// The privacy requests made for one of `ids`, matched by the salted
/// hash the audit keeps (never the value).
async fn privacy_requests(
    console: &Console,
    role: Role,
    ids: &[(String, String)],
) -> crate::error::Result<Grid> {
    use crate::identity::suppression;
    let exists = crate::lake::delta::open(&console.lake, &crate::privacy::requests_dir()).await?;
    if exists.is_none() || ids.is_empty() {
        return Ok(Grid::default());
    }
    let salt = suppression::salt(&console.lake).await?;
    let hashes: Vec<String> = ids
        .iter()
        .map(|(t, v)| format!("'{}'", suppression::hash(&salt, t, v)))
        .collect();
    data::grid(
        console.session(role),
        &format!(
            "SELECT requested_at, kind, id_type, status, completed_at FROM system.privacy_requests \
             WHERE value_hash IN ({}) ORDER BY requested_at DESC",
            hashes.join(", ")
        ),
        &[],
    )
    .await
}

/// The saved segments `id` is in now.
async fn member_of(console: &Console, role: Role, id: &str) -> crate::error::Result<Vec<String>> {
    let mut found = Vec::new();
    let names = console
        .lake
        .files_named(&crate::analytics::views_dir(), ".sql")
        .await?;
    for (name, _) in names {
        let sql = format!(
            "SELECT 1 FROM analytics.\"{name}\" WHERE CAST(profile_id AS VARCHAR) = $1 LIMIT 1"
        );
        match data::grid(console.session(role), &sql, &[id]).await {
            Ok(g) if !g.rows.is_empty() => found.push(name),
            _ => {}
        }
    }
    Ok(found)
}

/// For each CRM trait of the profile, the record that won it: the source
/// and time of the first CRM row (most trusted source, then latest) that
/// holds the profile's value.
async fn survivorship(
    console: &Console,
    people: &Arc<People>,
    profile: &Grid,
) -> crate::error::Result<BTreeMap<String, String>> {
    let mut won = BTreeMap::new();
    let Some(about) = people.about("customers", &console.identity)? else {
        return Ok(won);
    };
    let batches = console
        .admin
        .table("raw.customers")
        .await?
        .filter(about)?
        .collect()
        .await?;
    let rows = Grid::from_batches(&batches)?;
    let rank = |source: &str| {
        console
            .identity
            .source_priority
            .iter()
            .position(|s| s == source)
            .unwrap_or(usize::MAX)
    };
    let mut order: Vec<usize> = (0..rows.rows.len()).collect();
    order.sort_by(|&a, &b| {
        let (sa, sb) = (
            rows.get(a, "source").unwrap_or(""),
            rows.get(b, "source").unwrap_or(""),
        );
        rank(sa)
            .cmp(&rank(sb))
            .then_with(|| rows.get(b, "updated_at").cmp(&rows.get(a, "updated_at")))
    });
    // The profile's values, unmasked, to compare.
    let id = profile.get(0, "profile_id").unwrap_or_default();
    let truth = data::grid(
        &console.admin,
        "SELECT * FROM cdp.profiles WHERE profile_id = $1",
        &[id],
    )
    .await?;
    for column in &truth.columns {
        let Some(value) = truth.get(0, column).filter(|v| !v.is_empty()) else {
            continue;
        };
        if let Some(&row) = order.iter().find(|&&r| rows.get(r, column) == Some(value)) {
            won.insert(
                column.clone(),
                format!(
                    "CRM ({}) {}",
                    rows.get(row, "source").unwrap_or(""),
                    rows.get(row, "updated_at").unwrap_or("")
                ),
            );
        }
    }
    Ok(won)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BlockForm {
    csrf: String,
    id_type: String,
    id_value: String,
    /// With the other end of a link: block the link, not the value.
    other_type: String,
    other_value: String,
}

async fn block(
    State(console): State<Arc<Console>>,
    user: User,
    Path(id): Path<String>,
    Form(form): Form<BlockForm>,
) -> Response {
    if !csrf_ok(&user, &form.csrf) {
        return forbidden_csrf();
    }
    if user.role != Role::Admin {
        return failure(StatusCode::FORBIDDEN, "Only administrators can block.");
    }
    let (procedure, args) = if form.other_type.is_empty() {
        ("block_identifier", vec![form.id_type, form.id_value])
    } else {
        let ends = vec![
            form.id_type,
            form.id_value,
            form.other_type,
            form.other_value,
        ];
        ("block_link", ends)
    };
    let decision = match crate::identity::blocks::procedure(&console.identity, procedure, &args) {
        Ok(d) => d,
        Err(e) => return failure(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if let Err(e) =
        crate::identity::blocks::record(&console.lake, &decision, chrono::Utc::now()).await
    {
        return broken(e);
    }
    tracing::info!(user = %user.name, "blocked an identifier from the console");
    Redirect::to(&format!("/person/{id}")).into_response()
}

async fn segments(State(console): State<Arc<Console>>, user: User) -> Response {
    let names = match console
        .lake
        .files_named(&crate::analytics::views_dir(), ".sql")
        .await
    {
        Ok(names) => names,
        Err(e) => return broken(e),
    };
    let mut rows = Vec::new();
    for (name, _) in names {
        let definition = crate::analytics::saved_definition(&console.lake, &name)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        let purpose = crate::analytics::purpose_of(&definition)
            .unwrap_or("")
            .to_string();
        let size = segment_size(console.session(user.role), &name).await;
        rows.push((name, purpose, size));
    }
    layout(
        "Segments",
        Some(&user),
        html! {
            p { a.button href="/segments/new" { "Build a segment" } }
            @if rows.is_empty() { p.empty { "No saved segment yet." } } @else {
                table {
                    thead { tr { th scope="col" { "segment" } th scope="col" { "for purpose" } th scope="col" { "profiles now" } } }
                    tbody { @for (name, purpose, size) in &rows {
                        tr { td { a href={ "/segments/" (name) } { (name) } } td { (purpose) } td data-size=(name) { (size) } }
                    } }
                }
            }
        },
    )
    .into_response()
}

async fn segment(
    State(console): State<Arc<Console>>,
    user: User,
    Path(name): Path<String>,
) -> Response {
    if !builder::valid_name(&name) {
        return failure(StatusCode::NOT_FOUND, "No such segment.");
    }
    let definition = match crate::analytics::saved_definition(&console.lake, &name).await {
        Ok(Some(d)) => d,
        Ok(None) => return failure(StatusCode::NOT_FOUND, "No such segment."),
        Err(e) => return broken(e),
    };
    let ctx = console.session(user.role);
    let sizes = data::grid(
        ctx,
        "SELECT CAST(day AS VARCHAR) AS day, members FROM analytics.segment_sizes WHERE segment = $1 ORDER BY day",
        &[&name],
    )
    .await
    .unwrap_or_default();
    let points: Vec<Point> = sizes
        .rows
        .iter()
        .map(|r| Point {
            label: r[0].chars().take(10).collect(),
            value: r[1].parse().unwrap_or(0.0),
            moe: 0.0,
        })
        .collect();
    let size = segment_size(ctx, &name).await;
    let purpose = crate::analytics::purpose_of(&definition).map(str::to_string);
    layout(
        &format!("Segment {name}"),
        Some(&user),
        html! {
            p { "Profiles now: " strong data-size=(name) { (size) }
                @if let Some(p) = &purpose { " (only those who granted " (p) ")" } }
            h2 { "Size over time" }
            (charts::line(&format!("{name} size by day"), &points))
            p.hint { "From the segment_snapshots job's daily snapshots." }
            h2 { "SQL" }
            pre { code { (definition) } }
            h2 { "Download" }
            form method="get" action={ "/segments/" (name) "/download" } {
                label for="purpose" { "For the purpose" }
                select id="purpose" name="purpose" {
                    @for p in &console.identity.consent.purposes {
                        option value=(p) selected[purpose.as_deref() == Some(p.as_str())] { (p) }
                    }
                }
                button type="submit" { "Download CSV" }
            }
            p.hint { "Only the members who granted the purpose are written; the others are counted." }
        },
    )
    .into_response()
}

/// How many profiles the saved segment `name` holds now ("error" when it
/// cannot be read).
async fn segment_size(ctx: &datafusion::prelude::SessionContext, name: &str) -> String {
    let sql = format!("SELECT count(DISTINCT profile_id) FROM analytics.\"{name}\"");
    data::grid(ctx, &sql, &[])
        .await
        .ok()
        .and_then(|g| g.rows.first().map(|r| r[0].clone()))
        .unwrap_or_else(|| "error".into())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DownloadQuery {
    purpose: String,
}

async fn download(
    State(console): State<Arc<Console>>,
    user: User,
    Path(name): Path<String>,
    Query(query): Query<DownloadQuery>,
) -> Response {
    if !builder::valid_name(&name) {
        return failure(StatusCode::NOT_FOUND, "No such segment.");
    }
    let file = std::env::temp_dir().join(format!(
        "panorama-console-{}.csv",
        uuid::Uuid::new_v4().simple()
    ));
    let path = file.display().to_string();
    let summary = crate::export::export(
        console.session(user.role),
        &console.identity.consent,
        &name,
        &query.purpose,
        crate::export::Format::Csv,
        &path,
    )
    .await;
    let body = summary.and_then(|s| {
        std::fs::read(&file)
            .map(|bytes| (s, bytes))
            .map_err(|source| crate::error::Error::Io {
                what: "reading the export".into(),
                path: file.clone(),
                source,
            })
    });
    let _ = std::fs::remove_file(&file);
    match body {
        Ok((summary, bytes)) => {
            tracing::info!(user = %user.name, segment = %name, written = summary.written, left_out = summary.left_out, "console download");
            let disposition = format!("attachment; filename=\"{name}-{}.csv\"", query.purpose);
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                    (header::CONTENT_DISPOSITION, disposition),
                    (
                        header::HeaderName::from_static("x-panorama-left-out"),
                        summary.left_out.to_string(),
                    ),
                ],
                bytes,
            )
                .into_response()
        }
        Err(e) => failure(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

async fn builder_page(State(console): State<Arc<Console>>, user: User) -> Response {
    builder_view(&console, &user, &builder::Form::default(), None, None).into_response()
}

async fn builder_post(
    State(console): State<Arc<Console>>,
    user: User,
    Form(form): Form<builder::Form>,
) -> Response {
    if !csrf_ok(&user, &form.csrf) {
        return forbidden_csrf();
    }
    let sql = match builder::sql(&form, &console.identity.consent) {
        Ok(sql) => sql,
        Err(e) => return builder_view(&console, &user, &form, None, Some(&e)).into_response(),
    };
    if form.action != "save" {
        let count = data::grid(
            console.session(user.role),
            &format!("SELECT count(*) FROM ({sql}) s"),
            &[],
        )
        .await;
        let note = match count {
            Ok(g) => format!(
                "{} profiles match.",
                g.rows.first().map(|r| r[0].as_str()).unwrap_or("0")
            ),
            Err(e) => {
                return builder_view(
                    &console,
                    &user,
                    &form,
                    Some(&sql),
                    Some(&crate::redact::values(&e.to_string())),
                )
                .into_response();
            }
        };
        return builder_view(&console, &user, &form, Some(&sql), Some(&note)).into_response();
    }
    if !builder::valid_name(&form.name) {
        let e =
            "Name the segment with lower-case letters, digits and _ (it becomes analytics.<name>).";
        return builder_view(&console, &user, &form, Some(&sql), Some(e)).into_response();
    }
    let ctx = console.session(user.role);
    let definition = format!("CREATE VIEW analytics.{} AS {sql}", form.name);
    let saved = if form.purpose.is_empty() {
        match ctx.sql(&definition).await {
            Ok(df) => df.collect().await.map(|_| ()),
            Err(e) => Err(e),
        }
    } else {
        crate::analytics::save_for_purpose(ctx, &form.name, &definition, &form.purpose, false).await
    };
    match saved {
        Ok(()) => {
            tracing::info!(user = %user.name, segment = %form.name, "segment saved from the console");
            Redirect::to(&format!("/segments/{}", form.name)).into_response()
        }
        Err(e) => {
            let e = crate::redact::values(&e.to_string());
            builder_view(&console, &user, &form, Some(&sql), Some(&e)).into_response()
        }
    }
}

fn builder_view(
    console: &Console,
    user: &User,
    form: &builder::Form,
    sql: Option<&str>,
    note: Option<&str>,
) -> Html<String> {
    let purposes = &console.identity.consent.purposes;
    let traits = form.traits();
    layout(
        "Build a segment",
        Some(user),
        html! {
            @if let Some(note) = note { p.note role="status" { (note) } }
            form.builder method="post" action="/segments/new" {
                input type="hidden" name="csrf" value=(user.csrf);
                fieldset {
                    legend { "Profile traits" }
                    @for (i, (field, op, value)) in traits.iter().enumerate() {
                        @let n = i + 1;
                        div.row {
                            label for={ "t" (n) "_field" } { "Trait " (n) }
                            select id={ "t" (n) "_field" } name={ "t" (n) "_field" } {
                                option value="" { "—" }
                                @for (t, _) in builder::TRAITS { option value=(t) selected[field == t] { (t) } }
                            }
                            label.sr for={ "t" (n) "_op" } { "operator " (n) }
                            select id={ "t" (n) "_op" } name={ "t" (n) "_op" } {
                                @for o in builder::OPERATORS { option value=(o) selected[op == o] { (o) } }
                            }
                            label.sr for={ "t" (n) "_value" } { "value " (n) }
                            input id={ "t" (n) "_value" } name={ "t" (n) "_value" } value=(value);
                        }
                    }
                }
                fieldset {
                    legend { "Scores and consent" }
                    label for="rfm" { "RFM segment" }
                    select id="rfm" name="rfm" {
                        option value="" { "any" }
                        @for s in builder::RFM_SEGMENTS { option value=(s) selected[form.rfm == *s] { (s) } }
                    }
                    label for="nps" { "NPS category" }
                    select id="nps" name="nps" {
                        @for (v, l) in [("", "any"), ("promoter", "promoter (9–10)"), ("passive", "passive (7–8)"), ("detractor", "detractor (0–6)")] {
                            option value=(v) selected[form.nps == v] { (l) }
                        }
                    }
                    label for="consent" { "Has granted" }
                    select id="consent" name="consent" {
                        option value="" { "—" }
                        @for p in purposes { option value=(p) selected[form.consent == *p] { (p) } }
                    }
                }
                fieldset {
                    legend { "Activity" }
                    label for="event_min" { "At least (events)" }
                    input id="event_min" name="event_min" inputmode="numeric" value=(form.event_min);
                    label for="event_name" { "named (optional)" }
                    input id="event_name" name="event_name" value=(form.event_name);
                    label for="event_days" { "in the last (days)" }
                    input id="event_days" name="event_days" inputmode="numeric" value=(form.event_days);
                }
                fieldset {
                    legend { "Save" }
                    label for="name" { "Name (analytics.<name>)" }
                    input id="name" name="name" value=(form.name);
                    label for="purpose" { "For the purpose (only people who granted it)" }
                    select id="purpose" name="purpose" {
                        option value="" { "none" }
                        @for p in purposes { option value=(p) selected[form.purpose == *p] { (p) } }
                    }
                }
                button type="submit" name="action" value="preview" { "Preview" }
                button type="submit" name="action" value="save" { "Save" }
            }
            @if let Some(sql) = sql {
                h2 { "The SQL it writes" }
                pre { code id="sql" { (sql) } }
            }
        },
    )
}

async fn voc(State(console): State<Arc<Console>>, user: User) -> Response {
    match voc_page(&console, &user).await {
        Ok(page) => page.into_response(),
        Err(e) => broken(e),
    }
}

async fn voc_page(console: &Console, user: &User) -> crate::error::Result<Html<String>> {
    let ctx = console.session(user.role);
    let month = |g: &Grid, value: &str, moe: &dyn Fn(&Grid, usize) -> f64| -> Vec<Point> {
        (0..g.rows.len())
            .filter_map(|i| {
                Some(Point {
                    label: g.get(i, "month")?.chars().take(7).collect(),
                    value: g.get(i, value)?.parse().ok()?,
                    moe: moe(g, i),
                })
            })
            .collect()
    };
    let nps = data::grid(
        ctx,
        "SELECT CAST(month AS VARCHAR) AS month, responses, nps, nps_moe FROM analytics.nps_by_month ORDER BY month",
        &[],
    )
    .await?;
    let nps_points = month(&nps, "nps", &|g, i| {
        g.get(i, "nps_moe")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    });
    // CSAT is a share: its margin is 1.96·√(p(1−p)/n); CES a mean: 1.96·s/√n.
    let surveys = data::grid(
        ctx,
        "SELECT CAST(date_trunc('month', responded_at) AS VARCHAR) AS month, \
         csat(score) FILTER (WHERE survey = 'csat') AS csat, \
         count(*) FILTER (WHERE survey = 'csat') AS csat_n, \
         avg(score) FILTER (WHERE survey = 'ces') AS ces, \
         stddev(score) FILTER (WHERE survey = 'ces') AS ces_sd, \
         count(*) FILTER (WHERE survey = 'ces') AS ces_n \
         FROM raw.survey_responses GROUP BY 1 ORDER BY 1",
        &[],
    )
    .await?;
    let number = |g: &Grid, i: usize, c: &str| g.get(i, c).and_then(|v| v.parse::<f64>().ok());
    let csat = month(
        &surveys,
        "csat",
        &|g, i| match (number(g, i, "csat"), number(g, i, "csat_n")) {
            (Some(p), Some(n)) if n > 0.0 => {
                let p = p / 100.0;
                196.0 * (p * (1.0 - p) / n).sqrt()
            }
            _ => 0.0,
        },
    );
    let ces = month(
        &surveys,
        "ces",
        &|g, i| match (number(g, i, "ces_sd"), number(g, i, "ces_n")) {
            (Some(s), Some(n)) if n > 0.0 => 1.96 * s / n.sqrt(),
            _ => 0.0,
        },
    );
    let by_channel = data::grid(ctx, "SELECT * FROM analytics.nps_by_channel", &[]).await?;
    let by_segment = data::grid(ctx, "SELECT * FROM analytics.nps_by_segment", &[]).await?;
    let csat_by_channel =
        data::grid(ctx, "SELECT * FROM analytics.csat_ces_by_channel", &[]).await?;
    let cells = data::grid(
        ctx,
        "SELECT r, CAST(floor((f + m) / 2.0 + 0.5) AS BIGINT) AS fm, count(*) AS n FROM analytics.rfm GROUP BY 1, 2",
        &[],
    )
    .await?;
    let mut grid: [[(u64, String); 5]; 5] = Default::default();
    for (r, row) in grid.iter_mut().enumerate() {
        for (fm, cell) in row.iter_mut().enumerate() {
            *cell = (
                0,
                crate::functions::scores::segment((r + 1) as i64, (fm + 1) as i64, (fm + 1) as i64)
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    for row in &cells.rows {
        let (Ok(r), Ok(fm), Ok(n)) = (
            row[0].parse::<usize>(),
            row[1].parse::<usize>(),
            row[2].parse::<u64>(),
        ) else {
            continue;
        };
        if (1..=5).contains(&r) && (1..=5).contains(&fm) {
            grid[r - 1][fm - 1].0 = n;
        }
    }
    Ok(layout(
        "Voice of the customer",
        Some(user),
        html! {
            section aria-labelledby="nps" {
                h2 id="nps" { "NPS by month" }
                (charts::line("NPS by month, with its 95% margin of error", &nps_points))
                (table(&nps))
            }
            section aria-labelledby="csat" {
                h2 id="csat" { "CSAT by month" }
                (charts::line("CSAT (% satisfied) by month, with its 95% margin of error", &csat))
                h2 { "CES by month" }
                (charts::line("CES (mean effort) by month, with its 95% margin of error", &ces))
            }
            section aria-labelledby="channels" {
                h2 id="channels" { "By channel" }
                (table(&by_channel))
                (table(&csat_by_channel))
                h2 { "NPS by RFM segment" }
                (table(&by_segment))
            }
            section aria-labelledby="rfm" {
                h2 id="rfm" { "RFM grid" }
                (charts::heat_map(&grid))
            }
        },
    ))
}

async fn operations(State(console): State<Arc<Console>>, user: User) -> Response {
    let ctx = console.session(user.role);
    let queries = [
        (
            "Refreshes",
            "SELECT started_at, status, full, version, raw_rows, profiles, merges, error FROM system.refreshes ORDER BY started_at DESC LIMIT 20",
        ),
        (
            "Job runs",
            "SELECT started_at, job, status, rows_written, rows_left_out, error FROM system.job_runs ORDER BY started_at DESC LIMIT 20",
        ),
        (
            "Loads",
            "SELECT started_at, table_name, source, status, rows_read, rows_landed, rows_rejected, rows_suppressed FROM system.ingests ORDER BY started_at DESC LIMIT 20",
        ),
        (
            "Rejected rows by reason",
            "SELECT table_name, field, reason, count(*) AS rows FROM system.rejects GROUP BY 1, 2, 3 ORDER BY 4 DESC LIMIT 20",
        ),
    ];
    let mut sections = Vec::new();
    for (title, sql) in queries {
        let grid = data::grid(ctx, sql, &[]).await;
        sections.push((title, grid));
    }
    let collector = console.collector.as_ref().map(|stats| stats());
    let held = console.recent.as_ref().map(|r| r.len());
    layout(
        "Operations",
        Some(&user),
        html! {
            section aria-labelledby="collector" {
                h2 id="collector" { "Collector" }
                @match &collector {
                    None => p.empty { "The collector does not run in this process." },
                    Some(c) => ul {
                        li { "events accepted since start: " strong { (c.accepted) } }
                        li { "backlog (write-ahead log not yet in the lake): " strong { (c.backlog_bytes) " bytes" } }
                        li { "recent events held for the profile API: " (held.unwrap_or(0)) }
                        @if let Some(e) = &c.lake_error { li.error { "last flush error: " (crate::redact::values(e)) } }
                    },
                }
            }
            @for (title, grid) in &sections {
                section {
                    h2 { (title) }
                    @match grid {
                        Ok(g) => (table(g)),
                        Err(e) => p.error { (crate::redact::values(&e.to_string())) },
                    }
                }
            }
        },
    )
    .into_response()
}
