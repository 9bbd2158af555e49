//! The lake's secrets: random keys created once per lake and kept in it
//! (`system/keys/<name>`, never a queryable table), so every process on the
//! lake derives the same keyed values — profile ids that cannot be
//! recomputed from a guessed email without the key, salted hashes in audit
//! records. Whoever can read the lake's files can read the keys; whoever
//! can only query it cannot.

use object_store::path::Path;
use object_store::{PutMode, PutOptions, PutPayload};

use super::Lake;
use crate::error::{Error, Result};

fn path(name: &str) -> Path {
    Path::from("system/keys").join(name)
}

impl Lake {
    /// The 32-byte secret `name` of this lake, created on first use (two
    /// processes creating it at once agree on the first one written).
    pub async fn secret(&self, name: &str) -> Result<[u8; 32]> {
        let relative = path(name);
        if let Some(bytes) = self.get_bytes(&relative).await? {
            return key(&bytes, &self.path(&relative));
        }
        let mut fresh = [0u8; 32];
        rand::fill(&mut fresh);
        let absolute = self.path(&relative);
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store()
            .put_opts(&absolute, PutPayload::from(fresh.to_vec()), create)
            .await
        {
            Ok(_) => Ok(fresh),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let bytes = self.get_bytes(&relative).await?.ok_or_else(|| {
                    Error::Config(format!("{absolute} vanished while it was being created"))
                })?;
                key(&bytes, &absolute)
            }
            Err(e) => Err(Error::store(format!("writing {absolute}"), e)),
        }
    }
}

fn key(bytes: &[u8], path: &Path) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| {
        Error::Config(format!(
            "{path} is not a 32-byte key Panorama wrote; restore it from a backup (profile ids depend on it)"
        ))
    })
}
