//! A row-at-a-time builder for one raw table's Arrow batch: values are
//! appended column by column, in schema order, with typed calls; a row
//! that stops before `extra` has none.

use datafusion::arrow::array::{
    ArrayBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder, make_builder,
};
use datafusion::arrow::datatypes::SchemaRef;

use crate::error::{Error, Result};
use crate::schema::{EXTRA_COLUMN, RawTable};

/// Rows of one raw table being built.
pub struct TableRows {
    table: RawTable,
    schema: SchemaRef,
    builders: Vec<Box<dyn ArrayBuilder>>,
    column: usize,
    rows: usize,
}

impl TableRows {
    pub fn new(table: RawTable) -> TableRows {
        let schema = table.file_schema();
        let builders = schema
            .fields()
            .iter()
            .map(|f| make_builder(f.data_type(), 1024))
            .collect();
        TableRows {
            table,
            schema,
            builders,
            column: 0,
            rows: 0,
        }
    }

    pub fn table(&self) -> RawTable {
        self.table
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    fn next<B: ArrayBuilder>(&mut self) -> &mut B {
        let index = self.column;
        self.column += 1;
        let name = self.schema.field(index).name().clone();
        let table = self.table;
        self.builders[index]
            .as_any_mut()
            .downcast_mut::<B>()
            .unwrap_or_else(|| panic!("raw.{table}.{name} written with the wrong type"))
    }

    /// Next column: text.
    pub fn text(&mut self, value: Option<&str>) -> &mut Self {
        self.next::<StringBuilder>().append_option(value);
        self
    }

    /// Next column: timestamp in microseconds since the epoch (UTC).
    pub fn timestamp(&mut self, micros: Option<i64>) -> &mut Self {
        self.next::<TimestampMicrosecondBuilder>()
            .append_option(micros);
        self
    }

    /// Next column: 64-bit integer.
    pub fn int(&mut self, value: Option<i64>) -> &mut Self {
        self.next::<Int64Builder>().append_option(value);
        self
    }

    /// Next column: 64-bit float (`float8`, declared tables only).
    pub fn float(&mut self, value: Option<f64>) -> &mut Self {
        self.next::<Float64Builder>().append_option(value);
        self
    }

    /// Next column: money in cents (`numeric(12,2)`).
    pub fn money(&mut self, cents: Option<i64>) -> &mut Self {
        self.next::<Decimal128Builder>()
            .append_option(cents.map(i128::from));
        self
    }

    /// Next column: boolean.
    pub fn boolean(&mut self, value: Option<bool>) -> &mut Self {
        self.next::<BooleanBuilder>().append_option(value);
        self
    }

    /// Next column: date as days since the epoch.
    pub fn date(&mut self, days: Option<i32>) -> &mut Self {
        self.next::<Date32Builder>().append_option(days);
        self
    }

    /// Close the current row; every column must have been given a value,
    /// except the last, `extra`, which is NULL when not given.
    pub fn end_row(&mut self) {
        if self.column + 1 == self.builders.len()
            && self.schema.field(self.column).name() == EXTRA_COLUMN
        {
            self.text(None);
        }
        assert_eq!(
            self.column,
            self.builders.len(),
            "a row of raw.{} has the wrong number of values",
            self.table
        );
        self.column = 0;
        self.rows += 1;
    }

    /// Take the rows built so far as one batch and start afresh.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let columns = self.builders.iter_mut().map(|b| b.finish()).collect();
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::arrow(format!("building rows of raw.{}", self.table), e))
    }
}
