drop table if exists public.clinics cascade;
