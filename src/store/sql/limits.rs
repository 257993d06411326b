//! Rate-limit counters.
use super::*;

#[async_trait]
impl RateLimitStore for SqlStore {
    async fn rate_limit_hits(&self, hits: &[RateHit]) -> Result<Vec<i64>> {
        self.refuse_while_down()?;
        if let Pool::Postgres(p) = &self.pool
            && distinct_windows(hits)
            && !hits.is_empty()
        {
            let rows: Vec<(String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(
                dialect::count_hits_sql_postgres(hits.len()),
            ))
            .bind_hits(hits)
            .fetch_all(p)
            .await
            .map_err(|e| self.db_err(e))?;
            return counts_in_order(hits, &rows);
        }
        with_writer!(self, |p| {
            let mut tx = p.begin().await.map_err(|e| self.db_err(e))?;
            let counts = count_hits!(self, tx, hits);
            tx.commit().await.map_err(|e| self.db_err(e))?;
            Ok(counts)
        })
    }

    async fn give_back_hits(&self, hits: &[RateHit]) -> Result<()> {
        self.refuse_while_down()?;
        let sql = match self.pool {
            Pool::Postgres(_) => dialect::PG_GIVE_BACK_HIT,
            Pool::Sqlite { .. } => {
                "UPDATE rate_limits SET count = count - 1 \
                 WHERE key = $1 AND window_start = $2 AND count > 0"
            }
        };
        for h in hits {
            with_writer!(self, |p| sqlx::query(sql)
                .bind(&h.key)
                .bind(h.window_start)
                .execute(p)
                .await
                .map(|_| ())
                .map_err(|e| self.db_err(e)))?;
        }
        Ok(())
    }
}
