//! A builder of DynamoDB expressions that names every attribute through
//! `ExpressionAttributeNames` and every literal through `ExpressionAttributeValues`
//! (several attribute names of the schema, `owner` and `start` among them, are reserved
//! words).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

/// The names, values, update clauses and conditions of one request.
#[derive(Debug, Default, Clone)]
pub(super) struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    set: Vec<String>,
    remove: Vec<String>,
    conds: Vec<String>,
}

impl Expr {
    /// The placeholder of an attribute name (one per name).
    pub(super) fn name(&mut self, attr: &str) -> String {
        let next = format!("#n{}", self.names.len());
        let found = self.names.iter().find(|(_, a)| a.as_str() == attr);
        match found {
            Some((placeholder, _)) => placeholder.clone(),
            None => {
                self.names.insert(next.clone(), attr.to_owned());
                next
            }
        }
    }

    /// The placeholder of a literal.
    pub(super) fn value(&mut self, v: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), v);
        placeholder
    }

    /// `SET attr = v`.
    pub(super) fn set(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let clause = format!("{} = {}", self.name(attr), self.value(v));
        self.set.push(clause);
        self
    }

    /// `SET attr = v` when `v` is given, `REMOVE attr` otherwise.
    pub(super) fn set_or_remove(&mut self, attr: &str, v: Option<AttributeValue>) -> &mut Self {
        match v {
            Some(v) => self.set(attr, v),
            None => self.remove(attr),
        }
    }

    /// `SET attr = if_not_exists(attr, v)`.
    pub(super) fn set_if_missing(&mut self, attr: &str, v: AttributeValue) -> &mut Self {
        let (n, v) = (self.name(attr), self.value(v));
        self.set.push(format!("{n} = if_not_exists({n}, {v})"));
        self
    }

    /// `SET attr = if_not_exists(attr, 0) + 1`.
    pub(super) fn increment(&mut self, attr: &str) -> &mut Self {
        let n = self.name(attr);
        let zero = self.value(AttributeValue::N("0".into()));
        let one = self.value(AttributeValue::N("1".into()));
        self.set
            .push(format!("{n} = if_not_exists({n}, {zero}) + {one}"));
        self
    }

    /// `REMOVE attr`.
    pub(super) fn remove(&mut self, attr: &str) -> &mut Self {
        let n = self.name(attr);
        self.remove.push(n);
        self
    }

    /// Adds a condition clause (clauses are joined with AND).
    pub(super) fn cond(&mut self, clause: String) -> &mut Self {
        self.conds.push(format!("({clause})"));
        self
    }

    /// The clause `attr = v`.
    pub(super) fn eq(&mut self, attr: &str, v: AttributeValue) -> String {
        format!("{} = {}", self.name(attr), self.value(v))
    }

    /// The clause `attribute_not_exists(attr)`.
    pub(super) fn missing(&mut self, attr: &str) -> String {
        format!("attribute_not_exists({})", self.name(attr))
    }

    /// The clause `attr = v`, or `attribute_not_exists(attr)` when `v` is `None`.
    pub(super) fn eq_or_missing(&mut self, attr: &str, v: Option<AttributeValue>) -> String {
        match v {
            Some(v) => self.eq(attr, v),
            None => self.missing(attr),
        }
    }

    /// The UpdateExpression, if any clause was added.
    pub(super) fn update(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.set.is_empty() {
            parts.push(format!("SET {}", self.set.join(", ")));
        }
        if !self.remove.is_empty() {
            parts.push(format!("REMOVE {}", self.remove.join(", ")));
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    /// The ConditionExpression (or key condition), if any clause was added.
    pub(super) fn condition(&self) -> Option<String> {
        (!self.conds.is_empty()).then(|| self.conds.join(" AND "))
    }

    /// ExpressionAttributeNames (`None` when empty: DynamoDB refuses an empty map).
    pub(super) fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    /// ExpressionAttributeValues (`None` when empty).
    pub(super) fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// Sets the names, values and condition of `expr` on a request builder (any builder with
/// the three setters: PutItem, UpdateItem, DeleteItem, a transaction's Put).
macro_rules! with_expr {
    ($builder:expr, $expr:expr) => {{
        let e: &$crate::store::dynamo::expr::Expr = $expr;
        $builder
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .set_condition_expression(e.condition())
    }};
}
pub(super) use with_expr;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_attribute_and_literal() {
        let mut e = Expr::default();
        e.set("owner", AttributeValue::S("me".into()))
            .increment("lease_counter")
            .remove("owner");
        let c = e.eq("owner", AttributeValue::S("x".into()));
        e.cond(c);
        assert_eq!(
            e.update().unwrap(),
            "SET #n0 = :v0, #n1 = if_not_exists(#n1, :v1) + :v2 REMOVE #n0"
        );
        assert_eq!(e.condition().unwrap(), "(#n0 = :v3)");
        assert_eq!(e.names().unwrap().len(), 2);
        assert!(Expr::default().values().is_none());
    }
}
