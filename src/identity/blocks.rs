//! Unmerge by administrators: an identifier value or one specific link can
//! be blocked (and unblocked later). Each decision is one small Parquet
//! file under `system/identity_blocks/` (queryable as
//! `system.identity_blocks`), so the history is kept and every server on
//! the lake sees it. The next refresh replays the decisions in time order
//! and resolves without the blocked values and links: the profile splits
//! deterministically (see [`super::graph`]) and the split is recorded in
//! `cdp.profile_merges`.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use object_store::path::Path;

use super::config::IdentityConfig;
use super::normalize;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::parquet;
use crate::schema::{cdp, utc_timestamps};

/// Folder of `system.identity_blocks`.
pub fn blocks_dir() -> Path {
    Path::from("system/identity_blocks")
}

/// One identifier, as `(type, normalised value)`.
pub type Identifier = (String, String);

/// An administrator's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// `true` to block, `false` to lift an earlier block.
    pub block: bool,
    pub identifier: Identifier,
    /// The other end, when a single link is blocked.
    pub other: Option<Identifier>,
    pub reason: Option<String>,
}

/// The blocks in force.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Blocks {
    pub values: HashSet<Identifier>,
    /// Links, each stored with its ends in sorted order.
    pub links: HashSet<(Identifier, Identifier)>,
}

impl Blocks {
    pub fn link_blocked(&self, a: Identifier, b: Identifier) -> bool {
        let key = if a <= b { (a, b) } else { (b, a) };
        self.links.contains(&key)
    }
}

/// Check and normalise an identifier given by an administrator.
pub fn identifier(config: &IdentityConfig, id_type: &str, value: &str) -> Result<Identifier> {
    let t = config.id_type(id_type).ok_or_else(|| {
        let known: Vec<&str> = config.types.iter().map(|t| t.name.as_str()).collect();
        Error::Input(format!(
            "unknown identifier type '{id_type}' (known: {})",
            known.join(", ")
        ))
    })?;
    let country = normalize::country(&config.default_country)
        .ok_or_else(|| Error::Config("bad default_country".into()))?;
    let value = t
        .normalize_value(value, country)
        .ok_or_else(|| Error::Input(format!("the value given is not a valid {id_type}")))?;
    Ok((id_type.to_string(), value))
}

/// The decision of a SQL procedure call: `block_identifier(type, value)`,
/// `unblock_identifier(type, value)`, `block_link(type, value, type,
/// value)`, `unblock_link(...)`; an optional last argument is the reason.
pub fn procedure(config: &IdentityConfig, name: &str, args: &[String]) -> Result<Block> {
    let (block, link) = match name {
        "block_identifier" => (true, false),
        "unblock_identifier" => (false, false),
        "block_link" => (true, true),
        "unblock_link" => (false, true),
        _ => {
            return Err(Error::Input(format!(
                "unknown procedure panorama.{name} (known: block_identifier, unblock_identifier, block_link, unblock_link)"
            )));
        }
    };
    let needed = if link { 4 } else { 2 };
    if args.len() != needed && args.len() != needed + 1 {
        return Err(Error::Input(format!(
            "panorama.{name} takes {needed} arguments (and an optional reason), got {}",
            args.len()
        )));
    }
    Ok(Block {
        block,
        identifier: identifier(config, &args[0], &args[1])?,
        other: if link {
            Some(identifier(config, &args[2], &args[3])?)
        } else {
            None
        },
        reason: args.get(needed).cloned(),
    })
}

/// `email 'x@y.com'` or `the link email 'x@y.com' – user_id 'u1'`.
pub fn describe(block: &Block) -> String {
    let (t, v) = &block.identifier;
    match &block.other {
        None => format!("{t} '{v}'"),
        Some((ot, ov)) => format!("the link {t} '{v}' – {ot} '{ov}'"),
    }
}

/// Record a decision at time `at`.
pub async fn record(lake: &Lake, block: &Block, at: DateTime<Utc>) -> Result<()> {
    let schema = cdp::identity_blocks();
    let text = |v: Option<&str>| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            text(Some(if block.block { "block" } else { "unblock" })),
            text(Some(&block.identifier.0)),
            text(Some(&block.identifier.1)),
            text(block.other.as_ref().map(|o| o.0.as_str())),
            text(block.other.as_ref().map(|o| o.1.as_str())),
            text(block.reason.as_deref()),
            utc_timestamps([at.timestamp_micros()]),
        ],
    )
    .map_err(|e| Error::arrow("recording an identity block", e))?;
    crate::lake::delta::append_record(lake, &blocks_dir(), batch, "identity block", None).await
}

/// Replay every recorded decision, oldest first.
pub async fn load(lake: &Lake) -> Result<Blocks> {
    let mut decisions: Vec<(i64, String, Block)> = Vec::new();
    for file in crate::lake::delta::files(lake, &blocks_dir()).await?.files {
        let meta = file.meta;
        let name = meta.location.to_string();
        parquet::for_each_batch(lake, &meta, |b| {
            let s = |i: usize| b.column(i).as_string::<i32>().clone();
            let (action, t, v, ot, ov, reason) = (s(0), s(1), s(2), s(3), s(4), s(5));
            let at = b.column(6).as_primitive::<TimestampMicrosecondType>();
            let get = |a: &StringArray, row| (!a.is_null(row)).then(|| a.value(row).to_string());
            for row in 0..b.num_rows() {
                let other = get(&ot, row).zip(get(&ov, row));
                decisions.push((
                    at.value(row),
                    name.clone(),
                    Block {
                        block: action.value(row) == "block",
                        identifier: (t.value(row).to_string(), v.value(row).to_string()),
                        other,
                        reason: get(&reason, row),
                    },
                ));
            }
            Ok(())
        })
        .await?;
    }
    decisions.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut blocks = Blocks::default();
    for (_, _, d) in decisions {
        match d.other {
            None if d.block => {
                blocks.values.insert(d.identifier);
            }
            None => {
                blocks.values.remove(&d.identifier);
            }
            Some(other) => {
                let a = d.identifier;
                let key = if a <= other { (a, other) } else { (other, a) };
                if d.block {
                    blocks.links.insert(key);
                } else {
                    blocks.links.remove(&key);
                }
            }
        }
    }
    Ok(blocks)
}
