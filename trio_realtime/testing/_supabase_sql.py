"""SQL for the parts of Supabase's database that RLS policies rely on, for plain PostgreSQL.

Written for this project from Supabase's documented behaviour: the ``anon``,
``authenticated`` and ``service_role`` roles, and ``auth.uid()``, ``auth.role()`` and
``auth.jwt()``, which read the claims that Realtime sets for each subscriber
(``request.jwt.claims``). Every statement is meant to run only where the object is missing.
"""

ROLES_SQL = """
do $body$
declare
  name text;
begin
  foreach name in array array['anon', 'authenticated', 'service_role'] loop
    if not exists (select 1 from pg_roles where rolname = name) then
      execute format('create role %I nologin', name);
    end if;
  end loop;
end
$body$;
"""
"""Create the three API roles where missing (they are cluster-wide)."""

# Supabase's auth helpers, for databases without Supabase's auth schema. They read the claims
# the poller sets for each subscriber (request.jwt.claims), and the older per-claim settings.
AUTH_SQL = """
create schema auth;
create function auth.jwt() returns jsonb language sql stable as $body$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$body$;
create function auth.uid() returns uuid language sql stable as $body$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$body$;
create function auth.role() returns text language sql stable as $body$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$body$;
grant usage on schema auth to public;
"""
"""Create ``auth.jwt()``, ``auth.uid()`` and ``auth.role()``; run only where ``auth`` is absent."""

GRANTS_SQL = """
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
"""
"""Supabase's default grants on the public schema."""

PUBLICATION_SQL = """
do $body$
begin
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$body$;
"""
"""Create the (empty) ``supabase_realtime`` publication where missing."""
