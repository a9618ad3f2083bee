//! Prefixed wire ids over UUIDv7.
//!
//! On the wire every id carries its kind (`run_01936…`), so a run id pasted where an agent id
//! belongs fails to parse instead of silently matching nothing. Inside, ids are plain UUIDv7,
//! which keeps Postgres indexes append-mostly.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// An id string did not have the expected prefix or was not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected an id of the form {prefix}<32 hex digits>")]
pub struct ParseIdError {
    pub prefix: &'static str,
}

macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident => $prefix:literal,)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0.simple())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.strip_prefix($prefix)
                    .and_then(|hex| Uuid::try_parse(hex).ok())
                    .map(Self)
                    .ok_or(ParseIdError { prefix: $prefix })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .examples([concat!($prefix, "0193a5f0c6d27c30b1a4d1f0e2c3b4a5")])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    )*};
}

ids! {
    /// A tenant: everything else belongs to exactly one workspace.
    WorkspaceId => "wsp_",
    /// An API key (the id, not the secret).
    KeyId => "key_",
    /// A model provider configured in a workspace.
    ProviderId => "prv_",
    /// An agent.
    AgentId => "agt_",
    /// An immutable agent version.
    VersionId => "ver_",
    /// One execution of an agent.
    RunId => "run_",
    /// An async run or a batch, polled by the client.
    OperationId => "op_",
    /// A stored thread message.
    MessageId => "msg_",
    /// A provider's model registered in a workspace (reference 002's LLM models).
    ModelId => "mdl_",
    /// A webhook endpoint of a workspace.
    WebhookId => "whk_",
    /// One event's delivery to one webhook target.
    DeliveryId => "dlv_",
    /// A webhook event (the `webhook-id` header), the same across retries.
    EventId => "evt_",
    /// A workspace's HTTP tool.
    ToolId => "tool_",
    /// A tool call waiting for (or decided by) a person.
    ApprovalId => "apr_",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_wire_form() {
        let id = RunId::new();
        let wire = id.to_string();
        assert!(wire.starts_with("run_"));
        assert_eq!(wire.len(), 4 + 32);
        assert_eq!(wire.parse::<RunId>().unwrap(), id);
    }

    #[test]
    fn an_id_of_another_kind_does_not_parse() {
        let agent = AgentId::new().to_string();
        assert_eq!(agent.parse::<RunId>(), Err(ParseIdError { prefix: "run_" }));
        assert!("run_not-a-uuid".parse::<RunId>().is_err());
    }
}
