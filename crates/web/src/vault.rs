//! The profile at rest in the browser: IndexedDB, with every entry encrypted.
//!
//! Two WebCrypto keys are made on first use, both **non-extractable**: an AES-256-GCM key for
//! the values and an HMAC-SHA-256 key for the names they are stored under. IndexedDB keeps the
//! `CryptoKey` objects themselves (the browser stores them without ever exposing their bytes to
//! script), so a dump of the database shows opaque names and ciphertext only: no message text,
//! no usernames, no key material. Each stored value is `iv (12 bytes) ‖ AES-GCM(len ‖ name ‖
//! value)`; its IndexedDB key is the HMAC of the name in hex.

use js_sys::{Array, Promise};
use nightjar_core::storage::Entry;
use nightjar_machine::JournalEntry;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast as _, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{CryptoKey, IdbDatabase, IdbRequest, IdbTransactionMode};

use crate::js;

const DB_NAME: &str = "nightjar";
const KEYS: &str = "keys";
const PROFILE: &str = "profile";
const IV_BYTES: usize = 12;

type VaultResult<T> = Result<T, String>;

fn js_err(e: JsValue) -> String {
    js::describe(&e)
}

/// The encrypted profile store of this browser.
#[derive(Clone)]
pub(crate) struct Vault {
    db: IdbDatabase,
    aes: CryptoKey,
    hmac: CryptoKey,
}

/// Waits for an IndexedDB request; its result.
async fn request(req: &IdbRequest) -> VaultResult<JsValue> {
    let promise = Promise::new(&mut |resolve, reject| {
        let ok = Closure::once_into_js(move |_: JsValue| {
            let _ = resolve.call0(&JsValue::NULL);
        });
        let fail = Closure::once_into_js(move |e: JsValue| {
            let _ = reject.call1(&JsValue::NULL, &e);
        });
        req.set_onsuccess(Some(ok.unchecked_ref()));
        req.set_onerror(Some(fail.unchecked_ref()));
    });
    JsFuture::from(promise).await.map_err(|_| {
        req.error()
            .ok()
            .flatten()
            .map_or_else(|| "IndexedDB request failed".to_owned(), |e| e.message())
    })?;
    req.result().map_err(js_err)
}

/// Waits until a transaction commits.
async fn committed(tx: &web_sys::IdbTransaction) -> VaultResult<()> {
    let promise = Promise::new(&mut |resolve, reject| {
        let ok = Closure::once_into_js(move |_: JsValue| {
            let _ = resolve.call0(&JsValue::NULL);
        });
        let fail = Closure::once_into_js(move |e: JsValue| {
            let _ = reject.call1(&JsValue::NULL, &e);
        });
        tx.set_oncomplete(Some(ok.unchecked_ref()));
        tx.set_onerror(Some(fail.unchecked_ref()));
        let abort = Closure::once_into_js(move |e: JsValue| {
            let _ = e;
        });
        tx.set_onabort(Some(abort.unchecked_ref()));
    });
    JsFuture::from(promise)
        .await
        .map(drop)
        .map_err(|_| "IndexedDB transaction failed".to_owned())
}

fn subtle() -> VaultResult<web_sys::SubtleCrypto> {
    Ok(js::window()?.crypto().map_err(js_err)?.subtle())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn open_db() -> VaultResult<IdbDatabase> {
    let factory = js::window()?
        .indexed_db()
        .map_err(js_err)?
        .ok_or("this browser has no IndexedDB")?;
    let open = factory.open_with_u32(DB_NAME, 1).map_err(js_err)?;
    let upgrade = Closure::once_into_js(move |event: web_sys::IdbVersionChangeEvent| {
        let Some(target) = event.target() else { return };
        let Ok(req) = target.dyn_into::<IdbRequest>() else {
            return;
        };
        let Ok(db) = req.result().and_then(|r| r.dyn_into::<IdbDatabase>()) else {
            return;
        };
        let _ = db.create_object_store(KEYS);
        let _ = db.create_object_store(PROFILE);
    });
    open.set_onupgradeneeded(Some(upgrade.unchecked_ref()));
    let db = request(&open).await?;
    db.dyn_into::<IdbDatabase>().map_err(js_err)
}

async fn key(
    db: &IdbDatabase,
    name: &str,
    make: &js_sys::Object,
    usages: &[&str],
) -> VaultResult<CryptoKey> {
    let tx = db.transaction_with_str(KEYS).map_err(js_err)?;
    let stored = request(
        &tx.object_store(KEYS)
            .map_err(js_err)?
            .get(&name.into())
            .map_err(js_err)?,
    )
    .await?;
    if let Ok(key) = stored.dyn_into::<CryptoKey>() {
        return Ok(key);
    }
    let usages: Array = usages.iter().map(|u| JsValue::from_str(u)).collect();
    let key: CryptoKey = JsFuture::from(
        subtle()?
            .generate_key_with_object(make, false, &usages)
            .map_err(js_err)?,
    )
    .await
    .map_err(js_err)?
    .dyn_into()
    .map_err(js_err)?;
    let tx = db
        .transaction_with_str_and_mode(KEYS, IdbTransactionMode::Readwrite)
        .map_err(js_err)?;
    tx.object_store(KEYS)
        .map_err(js_err)?
        .put_with_key(&key, &name.into())
        .map_err(js_err)?;
    committed(&tx).await?;
    Ok(key)
}

impl Vault {
    /// Opens this browser's vault, making its keys on first use.
    pub(crate) async fn open() -> VaultResult<Self> {
        let db = open_db().await?;
        let aes = key(
            &db,
            "aes",
            &js::object(&[("name", "AES-GCM".into()), ("length", 256.into())]),
            &["encrypt", "decrypt"],
        )
        .await?;
        let hmac = key(
            &db,
            "hmac",
            &js::object(&[("name", "HMAC".into()), ("hash", "SHA-256".into())]),
            &["sign"],
        )
        .await?;
        Ok(Self { db, aes, hmac })
    }

    async fn name_of(&self, key: &[u8]) -> VaultResult<String> {
        let mac = JsFuture::from(
            subtle()?
                .sign_with_str_and_u8_array("HMAC", &self.hmac, key)
                .map_err(js_err)?,
        )
        .await
        .map_err(js_err)?;
        Ok(hex(&js::bytes(&mac)))
    }

    async fn seal(&self, key: &[u8], value: &[u8]) -> VaultResult<Vec<u8>> {
        let mut iv = [0u8; IV_BYTES];
        getrandom::fill(&mut iv).map_err(|e| e.to_string())?;
        let len = u32::try_from(key.len()).map_err(|_| "key too long")?;
        let mut plain = Vec::with_capacity(4 + key.len() + value.len());
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(key);
        plain.extend_from_slice(value);
        let params = js::object(&[("name", "AES-GCM".into()), ("iv", js::u8_array(&iv).into())]);
        let sealed = JsFuture::from(
            subtle()?
                .encrypt_with_object_and_u8_array(&params, &self.aes, &plain)
                .map_err(js_err)?,
        )
        .await
        .map_err(js_err)?;
        let mut out = iv.to_vec();
        out.extend(js::bytes(&sealed));
        Ok(out)
    }

    async fn open_entry(&self, sealed: &[u8]) -> VaultResult<Entry> {
        if sealed.len() < IV_BYTES {
            return Err("a stored entry is truncated".into());
        }
        let (iv, body) = sealed.split_at(IV_BYTES);
        let params = js::object(&[("name", "AES-GCM".into()), ("iv", js::u8_array(iv).into())]);
        let plain = JsFuture::from(
            subtle()?
                .decrypt_with_object_and_u8_array(&params, &self.aes, body)
                .map_err(js_err)?,
        )
        .await
        .map_err(|_| "a stored entry does not decrypt (the vault key changed?)".to_owned())?;
        let plain = js::bytes(&plain);
        let len = plain
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or("a stored entry is truncated")? as usize;
        let key = plain.get(4..4 + len).ok_or("a stored entry is truncated")?;
        Ok((key.to_vec(), plain[4 + len..].to_vec()))
    }

    /// Every stored entry, decrypted.
    pub(crate) async fn load(&self) -> VaultResult<Vec<Entry>> {
        let tx = self.db.transaction_with_str(PROFILE).map_err(js_err)?;
        let all = request(
            &tx.object_store(PROFILE)
                .map_err(js_err)?
                .get_all()
                .map_err(js_err)?,
        )
        .await?;
        let mut entries = Vec::new();
        for value in Array::from(&all).iter() {
            entries.push(self.open_entry(&js::bytes(&value)).await?);
        }
        Ok(entries)
    }

    /// Writes a journal: everything is encrypted first, then written in one transaction.
    pub(crate) async fn persist(&self, journal: Vec<JournalEntry>) -> VaultResult<()> {
        if journal.is_empty() {
            return Ok(());
        }
        let mut writes: Vec<(String, Option<Vec<u8>>)> = Vec::with_capacity(journal.len());
        for entry in journal {
            let name = self.name_of(&entry.key).await?;
            let sealed = match &entry.value {
                Some(v) => Some(self.seal(&entry.key, v).await?),
                None => None,
            };
            writes.push((name, sealed));
        }
        let tx = self
            .db
            .transaction_with_str_and_mode(PROFILE, IdbTransactionMode::Readwrite)
            .map_err(js_err)?;
        let store = tx.object_store(PROFILE).map_err(js_err)?;
        for (name, sealed) in writes {
            match sealed {
                Some(bytes) => {
                    store
                        .put_with_key(&js::u8_array(&bytes), &name.into())
                        .map_err(js_err)?;
                }
                None => {
                    store.delete(&name.into()).map_err(js_err)?;
                }
            }
        }
        committed(&tx).await
    }

    /// Deletes the profile (log out): entries and keys.
    pub(crate) async fn wipe(&self) -> VaultResult<()> {
        let tx = self
            .db
            .transaction_with_str_sequence_and_mode(
                &Array::of2(&PROFILE.into(), &KEYS.into()),
                IdbTransactionMode::Readwrite,
            )
            .map_err(js_err)?;
        tx.object_store(PROFILE)
            .map_err(js_err)?
            .clear()
            .map_err(js_err)?;
        tx.object_store(KEYS)
            .map_err(js_err)?
            .clear()
            .map_err(js_err)?;
        committed(&tx).await
    }
}
