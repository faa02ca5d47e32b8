drop table if exists clinicdb.clinics cascade;
