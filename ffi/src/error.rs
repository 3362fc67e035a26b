//! The one error apps see: [`ApiError`], a category with a stable `code`
//! and a message free of secret or personal data.
//!
//! | Variant | `code` | When |
//! |---|---|---|
//! | `InvalidInput` | `invalid_id` | an id string is not the form it should be |
//! | | `invalid_key` | a member key is not a valid ed25519 public key |
//! | | `invalid_secret` | a secret backup could not be read |
//! | | `invalid_argument` | an argument is out of range or malformed (the detail says which) |
//! | | `invalid_invite` | an invite link could not be read |
//! | | `malformed` | bytes given to `receive` could not be decoded |
//! | `Rejected` | a rule's code, below | a rule of the community refused the call |
//! | `NotFound` | `unknown_community` | this device holds no such community |
//! | | `no_sync` | no sync is running for that community |
//! | `Storage` | `directory_in_use` | another client holds the data directory |
//! | | `corrupt` | a stored file is newer than this library or damaged |
//! | | `database` | SQLite failed |
//! | | `io` | the file system failed |
//! | | `document` | an Automerge document failed |
//! | `Crypto` | `bad_signature` | a signature does not verify |
//! | | `no_randomness` | the operating system refused randomness |
//! | | `decrypt` | a message body cannot be opened (tampered, truncated, wrong key) |
//! | `Closed` | `closed` | the client was closed |
//!
//! `Rejected` codes are those of `karmyq_core::Rejection::code`:
//! `malformed`, `bad_signature`, `hash_mismatch`, `actor_mismatch`,
//! `wrong_community`, `unknown_document`, `duplicate_genesis`, `no_parents`,
//! `not_a_member`, `author_removed`, `role_revoked`, `not_permitted`,
//! `senior_admin`, `foreign_entry`, `already_member`, `target_not_member`,
//! `private`, `invite_invalid`, `member_limit`, `concurrent_with_removal`,
//! `invalid_field`, `dangling_op`, `out_of_sequence`,
//! `disallowed_operation`, `invalid_settings`, `not_requester`,
//! `not_responder`, `illegal_transition`, `blocked`, `not_participant`.

use karmyq_core::Error;

/// Why a call failed. Match on the variant for the category and on `code`
/// for the precise reason; `detail` is for logs and developers (named so
/// because Kotlin exceptions already have a `message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// An argument or input could not be used.
    #[error("{code}: {detail}")]
    InvalidInput {
        /// Stable code.
        code: String,
        /// What was wrong.
        detail: String,
    },
    /// A rule of the community refused the call.
    #[error("{code}: {detail}")]
    Rejected {
        /// Stable code: the rule.
        code: String,
        /// What was refused.
        detail: String,
    },
    /// Something named does not exist on this device.
    #[error("{code}: {detail}")]
    NotFound {
        /// Stable code.
        code: String,
        /// What was missing.
        detail: String,
    },
    /// Storage failed; nothing already stored was changed.
    #[error("{code}: {detail}")]
    Storage {
        /// Stable code.
        code: String,
        /// What failed.
        detail: String,
    },
    /// A signature, randomness or decryption failed.
    #[error("{code}: {detail}")]
    Crypto {
        /// Stable code.
        code: String,
        /// What failed.
        detail: String,
    },
    /// The client was closed.
    #[error("{code}: {detail}")]
    Closed {
        /// Always `closed`.
        code: String,
        /// What was called.
        detail: String,
    },
}

impl ApiError {
    /// The stable code, whatever the category.
    pub fn code(&self) -> &str {
        match self {
            ApiError::InvalidInput { code, .. }
            | ApiError::Rejected { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Storage { code, .. }
            | ApiError::Crypto { code, .. }
            | ApiError::Closed { code, .. } => code,
        }
    }

    pub(crate) fn invalid(code: &str, detail: impl Into<String>) -> Self {
        ApiError::InvalidInput {
            code: code.to_owned(),
            detail: detail.into(),
        }
    }

    pub(crate) fn closed() -> Self {
        ApiError::Closed {
            code: "closed".to_owned(),
            detail: "the client was closed".to_owned(),
        }
    }

    pub(crate) fn no_sync() -> Self {
        ApiError::NotFound {
            code: "no_sync".to_owned(),
            detail: "no sync is running for this community".to_owned(),
        }
    }
}

/// The one mapping from core's error to the app's. Core's messages carry
/// no secret or personal data, so they pass through.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let detail = e.to_string();
        let (make, code): (fn(String, String) -> ApiError, &str) = match &e {
            Error::InvalidKey => (invalid_input, "invalid_key"),
            Error::InvalidId => (invalid_input, "invalid_id"),
            Error::InvalidSecret => (invalid_input, "invalid_secret"),
            Error::InvalidArgument(_) => (invalid_input, "invalid_argument"),
            Error::Decode { .. } => (invalid_input, "malformed"),
            Error::Rejected(r) => (rejected, r.code()),
            Error::UnknownCommunity => (not_found, "unknown_community"),
            Error::DirectoryInUse => (storage, "directory_in_use"),
            Error::Corrupt(_) => (storage, "corrupt"),
            Error::Sqlite(_) => (storage, "database"),
            Error::Io(_) => (storage, "io"),
            Error::Automerge(_) => (storage, "document"),
            Error::BadSignature => (crypto, "bad_signature"),
            Error::Randomness => (crypto, "no_randomness"),
            Error::Decrypt(_) => (crypto, "decrypt"),
            // Core's error grows; a new kind reads as storage until it is
            // given a code of its own here.
            _ => (storage, "internal"),
        };
        make(code.to_owned(), detail)
    }
}

fn invalid_input(code: String, detail: String) -> ApiError {
    ApiError::InvalidInput { code, detail }
}

fn rejected(code: String, detail: String) -> ApiError {
    ApiError::Rejected { code, detail }
}

fn not_found(code: String, detail: String) -> ApiError {
    ApiError::NotFound { code, detail }
}

fn storage(code: String, detail: String) -> ApiError {
    ApiError::Storage { code, detail }
}

fn crypto(code: String, detail: String) -> ApiError {
    ApiError::Crypto { code, detail }
}

/// What exported calls return.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use karmyq_core::Rejection;

    #[test]
    fn rejections_keep_their_rule_code() {
        let e = ApiError::from(Error::Rejected(Rejection::NotPermitted));
        assert!(matches!(e, ApiError::Rejected { .. }));
        assert_eq!(e.code(), "not_permitted");
    }

    #[test]
    fn each_kind_lands_in_its_category() {
        assert!(matches!(
            ApiError::from(Error::InvalidId),
            ApiError::InvalidInput { ref code, .. } if code == "invalid_id"
        ));
        assert!(matches!(
            ApiError::from(Error::UnknownCommunity),
            ApiError::NotFound { ref code, .. } if code == "unknown_community"
        ));
        assert!(matches!(
            ApiError::from(Error::DirectoryInUse),
            ApiError::Storage { ref code, .. } if code == "directory_in_use"
        ));
        assert_eq!(ApiError::from(Error::Randomness).code(), "no_randomness");
    }
}
