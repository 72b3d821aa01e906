//! Validating an object against the CRD it belongs to, as the API server
//! would: structural defaults, the OpenAPI schema (through a JSON Schema
//! validator) and the `x-kubernetes-validations` CEL rules (through kube's
//! CEL engine), including transition rules when the old object is given.
//!
//! The schema is the one `tenantdb crd` prints, so what passes here is what
//! a cluster accepts; the tests use this to prove the schema's rules.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::{CompiledSchema, Validator as CelValidator, apply_defaults, compile_schema};
use serde_json::{Map, Value};

use crate::api::common::{
    DURATION_PATTERN, K8S_NAME_PATTERN, PG_NAME_PATTERN, SQL_IDENTIFIER_PATTERN, is_k8s_name,
};

/// One rejected field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path, e.g. `spec.pool.maxConnections`.
    pub field: String,
    pub reason: String,
}

/// A CRD whose schema cannot be compiled: a bug in the API types.
#[derive(Debug, thiserror::Error)]
#[error("CRD {crd}: {reason}")]
pub struct SchemaError {
    pub crd: String,
    pub reason: String,
}

struct KindSchema {
    api_version: String,
    kind: String,
    namespaced: bool,
    openapi: Value,
    json_schema: jsonschema::Validator,
    cel: CompiledSchema,
}

/// Validates objects of the kinds of a set of CRDs.
pub struct SchemaValidator {
    kinds: Vec<KindSchema>,
    cel: CelValidator,
}

impl SchemaValidator {
    /// A validator for tenantdb's own CRDs.
    pub fn new() -> Result<Self, SchemaError> {
        Self::for_crds(&crate::api::crds())
    }

    /// A validator for the served versions of the given CRDs.
    pub fn for_crds(crds: &[CustomResourceDefinition]) -> Result<Self, SchemaError> {
        let mut kinds = Vec::new();
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let error = |reason: String| SchemaError {
                crd: name.clone(),
                reason,
            };
            for version in crd.spec.versions.iter().filter(|v| v.served) {
                let openapi = version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .ok_or_else(|| error(format!("version {} has no openAPIV3Schema", version.name)))?;
                let openapi = serde_json::to_value(openapi).map_err(|e| error(e.to_string()))?;
                let json_schema = jsonschema::draft4::options()
                    .should_validate_formats(false)
                    .build(&to_json_schema(&with_implicit_root_fields(&openapi)))
                    .map_err(|e| error(e.to_string()))?;
                let cel = compile_schema(&openapi);
                if cel.has_errors() {
                    let reasons: Vec<String> =
                        cel.compilation_errors().iter().map(|e| e.to_string()).collect();
                    return Err(error(format!("CEL rules do not compile: {}", reasons.join("; "))));
                }
                kinds.push(KindSchema {
                    api_version: format!("{}/{}", crd.spec.group, version.name),
                    kind: crd.spec.names.kind.clone(),
                    namespaced: crd.spec.scope == "Namespaced",
                    openapi,
                    json_schema,
                    cel,
                });
            }
        }
        Ok(Self {
            kinds,
            cel: CelValidator::new(),
        })
    }

    /// Checks `object` as a create (or, with `old`, as an update of `old`) and
    /// returns it with the schema's defaults applied, or every field error.
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Result<Value, Vec<FieldError>> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
        let Some(schema) = self
            .kinds
            .iter()
            .find(|k| k.api_version == api_version && k.kind == kind)
        else {
            let served: Vec<&str> = self
                .kinds
                .iter()
                .filter(|k| k.kind == kind)
                .map(|k| k.api_version.as_str())
                .collect();
            let reason = if served.is_empty() {
                format!("unknown kind {kind}")
            } else {
                format!(
                    "{kind} is not served as {api_version} (served: {})",
                    served.join(", ")
                )
            };
            return Err(vec![FieldError {
                field: "apiVersion".into(),
                reason,
            }]);
        };

        let mut errors = metadata_errors(object, schema.namespaced);
        // The API server defaults inside a default it just applied too
        // (`status: {}` gains `observedGeneration: 0`); one more pass does
        // that here, and changes nothing where nothing was added.
        let defaulted = apply_defaults(&schema.openapi, &apply_defaults(&schema.openapi, object));
        errors.extend(
            schema
                .json_schema
                .iter_errors(&defaulted)
                .flat_map(|e| field_errors(&e)),
        );
        // Like the API server, CEL rules run only on an object that is
        // structurally valid: rules may assume the types the schema promises.
        if errors.is_empty()
            && let Err(failures) = self.cel.validate_compiled(&schema.cel, &defaulted, old)
        {
            errors.extend(failures.iter().map(|f| FieldError {
                field: f.field_path.clone(),
                reason: f.message.clone(),
            }));
        }
        if errors.is_empty() {
            Ok(defaulted)
        } else {
            Err(errors)
        }
    }
}

fn metadata_errors(object: &Value, namespaced: bool) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.is_empty() {
        errors.push(FieldError {
            field: "metadata.name".into(),
            reason: "required".into(),
        });
    } else if !is_k8s_name(name) {
        errors.push(FieldError {
            field: "metadata.name".into(),
            reason: "must be a lower-case RFC 1123 name (letters, digits, '-', '.'), at most 253 characters"
                .into(),
        });
    }
    if !namespaced && object.pointer("/metadata/namespace").is_some() {
        errors.push(FieldError {
            field: "metadata.namespace".into(),
            reason: "this kind is cluster-scoped and takes no namespace".into(),
        });
    }
    errors
}

/// `/spec/indexes/0/name` → `spec.indexes[0].name`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    if out.is_empty() { "(document)".into() } else { out }
}

/// The validator's finding as field errors: an unknown field is named
/// itself (as `kubectl apply` names it), and the schema's patterns are said
/// in words.
fn field_errors(error: &jsonschema::ValidationError<'_>) -> Vec<FieldError> {
    let path = dotted(error.instance_path().as_str());
    if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } = error.kind() {
        return unexpected
            .iter()
            .map(|name| FieldError {
                field: if path == "(document)" {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                },
                reason: "unknown field".into(),
            })
            .collect();
    }
    vec![FieldError {
        field: path,
        reason: explain(error),
    }]
}

/// The validator's message, with the schema's patterns said in words and
/// whole-number limits written as whole numbers.
fn explain(error: &jsonschema::ValidationError<'_>) -> String {
    use jsonschema::error::ValidationErrorKind;
    let whole = |limit: &Value| {
        limit
            .as_f64()
            .filter(|f| f.fract() == 0.0)
            .map(|f| format!("{f:.0}"))
    };
    match error.kind() {
        ValidationErrorKind::Minimum { limit } if whole(limit).is_some() => {
            return format!(
                "{} is less than the minimum of {}",
                error.instance(),
                whole(limit).unwrap_or_default()
            );
        }
        ValidationErrorKind::Maximum { limit } if whole(limit).is_some() => {
            return format!(
                "{} is greater than the maximum of {}",
                error.instance(),
                whole(limit).unwrap_or_default()
            );
        }
        _ => {}
    }
    if let ValidationErrorKind::Pattern { pattern } = error.kind() {
        let rule = match pattern.as_str() {
            PG_NAME_PATTERN => Some("lower-case letters, digits and '_' only, not starting with a digit"),
            SQL_IDENTIFIER_PATTERN => Some("letters, digits, '_' and '$' only, not starting with a digit"),
            DURATION_PATTERN => Some("a duration such as 500ms, 30s, 2m, 1h30m, or 0"),
            K8S_NAME_PATTERN => Some("a lower-case RFC 1123 name (letters, digits, '-', '.')"),
            _ => None,
        };
        if let Some(rule) = rule {
            return format!("{} is not valid: must be {rule}", error.instance());
        }
    }
    error.to_string()
}

/// The API server accepts `apiVersion`, `kind` and `metadata` on every
/// object without the CRD declaring them; declare them for the validator.
fn with_implicit_root_fields(openapi: &Value) -> Value {
    let mut root = openapi.clone();
    if let Some(Value::Object(properties)) = root.get_mut("properties") {
        for (name, schema) in [
            ("apiVersion", serde_json::json!({"type": "string"})),
            ("kind", serde_json::json!({"type": "string"})),
            (
                "metadata",
                serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            ),
        ] {
            properties.entry(name).or_insert(schema);
        }
    }
    root
}

/// Translates an OpenAPI v3 structural schema into plain JSON Schema:
/// `nullable: true` becomes a `null` type, and objects with declared
/// properties reject unknown fields the way `kubectl apply` (strict field
/// validation) does. Kubernetes' `x-kubernetes-*` keywords are left for the
/// CEL engine; the JSON Schema validator ignores them.
fn to_json_schema(openapi: &Value) -> Value {
    let Value::Object(map) = openapi else {
        return openapi.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        let converted = match key.as_str() {
            "properties" | "patternProperties" => match value {
                Value::Object(props) => Value::Object(
                    props
                        .iter()
                        .map(|(name, schema)| (name.clone(), to_json_schema(schema)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "items" | "additionalProperties" | "not" => to_json_schema(value),
            "allOf" | "anyOf" | "oneOf" => match value {
                Value::Array(schemas) => Value::Array(schemas.iter().map(to_json_schema).collect()),
                other => other.clone(),
            },
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }
    if out.get("nullable") == Some(&Value::Bool(true))
        && let Some(Value::String(t)) = out.get("type").cloned()
    {
        out.insert("type".into(), serde_json::json!([t, "null"]));
    }
    let preserves_unknown = out.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if out.contains_key("properties") && !out.contains_key("additionalProperties") && !preserves_unknown {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_become_dotted_paths() {
        assert_eq!(dotted("/spec/pool/maxConnections"), "spec.pool.maxConnections");
        assert_eq!(dotted("/spec/indexes/2/name"), "spec.indexes[2].name");
        assert_eq!(dotted(""), "(document)");
    }

    #[test]
    fn nullable_becomes_a_null_type_and_unknown_fields_are_refused() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"a": {"type": "string", "nullable": true}}
        });
        let converted = to_json_schema(&schema);
        assert_eq!(
            converted["properties"]["a"]["type"],
            serde_json::json!(["string", "null"])
        );
        assert_eq!(converted["additionalProperties"], Value::Bool(false));
    }
}
