//! Centers, bearer tokens and the role rules of SPEC §5.
//!
//! A token is 32 random bytes shown once; only its sha256 is stored. Roles:
//! `super_admin` (global), `center_admin`, `uploader`, `viewer` (one center each).

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db::DbError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum TokenRole {
    SuperAdmin,
    CenterAdmin,
    Uploader,
    Viewer,
}

impl TokenRole {
    pub fn parse(s: &str) -> Option<TokenRole> {
        match s {
            "super_admin" => Some(TokenRole::SuperAdmin),
            "center_admin" => Some(TokenRole::CenterAdmin),
            "uploader" => Some(TokenRole::Uploader),
            "viewer" => Some(TokenRole::Viewer),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::SuperAdmin => "super_admin",
            TokenRole::CenterAdmin => "center_admin",
            TokenRole::Uploader => "uploader",
            TokenRole::Viewer => "viewer",
        }
    }
    pub fn can_upload(self) -> bool {
        !matches!(self, TokenRole::Viewer)
    }
}

/// Who is calling, as resolved from a valid, unrevoked token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: i64,
    pub label: String,
    pub role: TokenRole,
    /// (id, center_key) for scoped roles; None for super_admin.
    pub center: Option<(i64, String)>,
}

impl Principal {
    /// May this principal see jobs of `center_id`?
    pub fn sees_center(&self, center_id: Option<i64>) -> bool {
        match (&self.center, center_id) {
            (None, _) => true,
            (Some((mine, _)), Some(c)) => *mine == c,
            (Some(_), None) => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown role {0:?}; valid roles: super_admin, center_admin, uploader, viewer")]
    UnknownRole(String),
    #[error("role {0} is scoped to one center: pass --center KEY")]
    CenterRequired(&'static str),
    #[error("super_admin is global: drop --center")]
    CenterNotAllowed,
    #[error("no center with key {0:?}; create it first with `lxgate center add {0} --name NAME`")]
    UnknownCenter(String),
    #[error("center key {0:?} is not valid: use letters, digits, '_', '.', '-' (max 64), starting with a letter or digit")]
    BadCenterKey(String),
    #[error("node key {0:?} is not valid: use up to 253 letters, digits, '.', '_', ':', '-', starting with a letter or digit")]
    BadNodeKey(String),
    #[error("the secret hash is neither Django's pbkdf2_sha256$ITERATIONS$SALT$BASE64 (endoreg-db's NetworkNode.shared_secret_hash) nor lxgate's own: copy the whole field")]
    BadSecretHash,
    #[error("no token with label {0:?} (or it is already revoked)")]
    UnknownToken(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for AuthError {
    fn from(e: tokio_postgres::Error) -> Self {
        AuthError::Db(DbError::Query(e))
    }
}

/// sha256 of a token: all the database and the verified-token cache ever hold.
pub type TokenHash = [u8; 32];

pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

pub fn valid_center_key(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

pub async fn add_center(
    c: &tokio_postgres::Client,
    key: &str,
    name: &str,
) -> Result<i64, AuthError> {
    if !valid_center_key(key) {
        return Err(AuthError::BadCenterKey(key.into()));
    }
    let row = c
        .query_one(
            "INSERT INTO centers (center_key, name) VALUES ($1, $2)
             ON CONFLICT (center_key) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            &[&key, &name],
        )
        .await?;
    Ok(row.get(0))
}

pub async fn center_id(c: &tokio_postgres::Client, key: &str) -> Result<Option<i64>, AuthError> {
    Ok(
        c.query_opt("SELECT id FROM centers WHERE center_key = $1", &[&key])
            .await?
            .map(|r| r.get(0)),
    )
}

/// What a center's name (or a value that may be a key or a name) leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum CenterMatch {
    Found(i64),
    Missing,
    /// Several centers carry that name: the value cannot choose one.
    Ambiguous(usize),
}

/// The centers named `name` (names are not unique, keys are).
pub async fn center_by_name(
    c: &tokio_postgres::Client,
    name: &str,
) -> Result<CenterMatch, AuthError> {
    let rows = c
        .query("SELECT id FROM centers WHERE name = $1 LIMIT 3", &[&name])
        .await?;
    Ok(match rows.as_slice() {
        [] => CenterMatch::Missing,
        [one] => CenterMatch::Found(one.get(0)),
        more => CenterMatch::Ambiguous(more.len()),
    })
}

/// `LX_ANNOTATE_DEFAULT_CENTER` as endoreg-db's `resolve_local_center` reads it: a
/// center key first, else a center name (which must be unique).
pub async fn center_by_key_or_name(
    c: &tokio_postgres::Client,
    value: &str,
) -> Result<CenterMatch, AuthError> {
    if let Some(id) = center_id(c, value).await? {
        return Ok(CenterMatch::Found(id));
    }
    center_by_name(c, value).await
}

/// A center declared by a drop or an upload (`center_key`, `center_name`, blanks
/// count as absent), by endoreg-db's rule: either may name it, and when both name a
/// center it must be the same one. `Ok(None)`: nothing declared.
pub async fn declared_center(
    c: &tokio_postgres::Client,
    key: Option<&str>,
    name: Option<&str>,
) -> Result<Result<Option<i64>, String>, AuthError> {
    let key = key.map(str::trim).filter(|k| !k.is_empty());
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    let by_key = match key {
        Some(k) => center_id(c, k).await?,
        None => None,
    };
    let by_name = match name {
        Some(n) => match center_by_name(c, n).await? {
            CenterMatch::Found(id) => Some(id),
            CenterMatch::Missing => None,
            CenterMatch::Ambiguous(_) if by_key.is_some() => None,
            CenterMatch::Ambiguous(k) => {
                return Ok(Err(format!(
                    "center_name {n:?} names {k} or more centers: give its center_key instead"
                )))
            }
        },
        None => None,
    };
    Ok(match (key, name, by_key, by_name) {
        (_, _, Some(a), Some(b)) if a != b => {
            Err("center_key and center_name name different centers: give one, or make them agree".into())
        }
        (_, _, Some(a), _) | (_, _, None, Some(a)) => Ok(Some(a)),
        (None, None, ..) => Ok(None),
        (Some(k), None, ..) => Err(format!(
            "unknown center_key {k:?}: create it (lxgate center add {k} --name NAME) or fix the key"
        )),
        (None, Some(n), ..) => Err(format!(
            "unknown center_name {n:?}: create it (lxgate center add KEY --name {n:?}) or give its center_key"
        )),
        (Some(k), Some(n), ..) => Err(format!(
            "unknown center: neither center_key {k:?} nor center_name {n:?} names a center; create it with lxgate center add"
        )),
    })
}

/// The operator's fix for a default center that matches nothing or too much.
pub fn default_center_problem(value: &str, m: &CenterMatch) -> Option<String> {
    match m {
        CenterMatch::Found(_) => None,
        CenterMatch::Missing => Some(format!(
            "LX_ANNOTATE_DEFAULT_CENTER={value:?} is neither a center key nor a center name: create it (lxgate center add KEY --name {value:?}) or set the variable to an existing center's key"
        )),
        CenterMatch::Ambiguous(n) => Some(format!(
            "LX_ANNOTATE_DEFAULT_CENTER={value:?} names {n} or more centers: set it to one center's key instead"
        )),
    }
}

/// Create a token; returns the secret, which is never stored.
pub async fn create_token(
    c: &tokio_postgres::Client,
    role: &str,
    center: Option<&str>,
    label: &str,
) -> Result<String, AuthError> {
    let role = TokenRole::parse(role).ok_or_else(|| AuthError::UnknownRole(role.into()))?;
    let center_id = match (role, center) {
        (TokenRole::SuperAdmin, Some(_)) => return Err(AuthError::CenterNotAllowed),
        (TokenRole::SuperAdmin, None) => None,
        (r, None) => return Err(AuthError::CenterRequired(r.as_str())),
        (_, Some(k)) => Some(
            center_id(c, k)
                .await?
                .ok_or_else(|| AuthError::UnknownCenter(k.into()))?,
        ),
    };
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = format!("lxg_{}", hex::encode(raw));
    c.execute(
        "INSERT INTO api_tokens (token_sha256, label, role, center_id) VALUES ($1, $2, $3, $4)",
        &[&&hash_token(&token)[..], &label, &role.as_str(), &center_id],
    )
    .await?;
    crate::audit::key_operation("token_created", label, center);
    Ok(token)
}

pub async fn revoke_token(c: &tokio_postgres::Client, label: &str) -> Result<u64, AuthError> {
    let n = c
        .execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE label = $1 AND revoked_at IS NULL",
            &[&label],
        )
        .await?;
    if n == 0 {
        return Err(AuthError::UnknownToken(label.into()));
    }
    crate::audit::key_operation("token_revoked", label, None);
    Ok(n)
}

/// The principal of a valid, unrevoked token with this hash.
pub async fn lookup(
    c: &deadpool_postgres::Client,
    hash: &TokenHash,
) -> Result<Option<Principal>, DbError> {
    let stmt = c
        .prepare_cached(
            "SELECT t.id, t.label, t.role, t.center_id, c.center_key
             FROM api_tokens t LEFT JOIN centers c ON c.id = t.center_id
             WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL",
        )
        .await?;
    let row = c.query_opt(&stmt, &[&&hash[..]]).await?;
    Ok(row.and_then(|r| principal_at(&r, 0)))
}

/// A principal from the five token columns starting at `at` (id, label, role,
/// center_id, center_key); None when they are NULL (no such token in a LEFT JOIN).
pub fn principal_at(r: &tokio_postgres::Row, at: usize) -> Option<Principal> {
    let token_id: i64 = r.get::<_, Option<i64>>(at)?;
    let center_id: Option<i64> = r.get(at + 3);
    let center_key: Option<String> = r.get(at + 4);
    Some(Principal {
        token_id,
        label: r.get(at + 1),
        role: TokenRole::parse(r.get::<_, &str>(at + 2)).unwrap_or(TokenRole::Viewer),
        center: center_id.zip(center_key),
    })
}
