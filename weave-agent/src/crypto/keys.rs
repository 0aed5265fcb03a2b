//! The keys the data plane's handshakes use: this agent's static key pair, kept in the state
//! directory so that a restarted agent is the same peer to the others at once, and the
//! pre-shared key every agent of the mesh derives from the password.

use std::{fs, io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

use anyhow::{Context as _, Result, anyhow, bail};
use argon2::Argon2;

use super::handshake::{Identity, StaticPair};

/// File in the state directory: the private key, then the public one.
pub const KEY_FILE: &str = "seal_key";
/// Another salt than the gossip key's: the two keys are unrelated to anyone without the
/// password.
const PSK_SALT: &[u8] = b"weave-agent data plane psk v1";

/// The pre-shared key of the mesh with password `password`.
pub fn derive_psk(password: &str) -> Result<[u8; 32]> {
    if password.is_empty() {
        bail!("the password is empty");
    }
    let mut psk = [0u8; 32];
    Argon2::default()
        .hash_password_into(password.as_bytes(), PSK_SALT, &mut psk)
        .map_err(|err| anyhow!("deriving the data plane's key: {err}"))?;
    Ok(psk)
}

/// This agent's key pair from `state_dir`, made (readable by root only) the first time.
pub fn load_or_create(state_dir: &Path) -> Result<StaticPair> {
    let path = state_dir.join(KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) if bytes.len() == 64 => {
            return Ok(StaticPair {
                private: bytes[..32].try_into()?,
                public: bytes[32..].try_into()?,
            });
        }
        Ok(_) => bail!(
            "{} is not a key pair; remove it and launch again to make a new one (peers learn \
             the new key through gossip)",
            path.display()
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    }
    let pair = Identity::generate_pair()?;
    let tmp = path.with_extension("new");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(&pair.private)?;
    file.write_all(&pair.public)?;
    file.sync_all()?;
    fs::rename(&tmp, &path).with_context(|| format!("saving {}", path.display()))?;
    Ok(pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_pair_survives_a_restart_and_is_private() {
        let dir = std::env::temp_dir().join(format!("weave-seal-key-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let first = load_or_create(&dir).unwrap();
        let again = load_or_create(&dir).unwrap();
        assert!(first == again);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
        fs::write(dir.join(KEY_FILE), b"short").unwrap();
        let err = load_or_create(&dir).err().unwrap();
        assert!(format!("{err:#}").contains("remove it"), "{err:#}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_psk_depends_on_the_password_only() {
        assert_eq!(derive_psk("a").unwrap(), derive_psk("a").unwrap());
        assert_ne!(derive_psk("a").unwrap(), derive_psk("b").unwrap());
        assert!(derive_psk("").is_err());
    }
}
