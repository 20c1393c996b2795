// A real Vendure 3 shop for the demo and the Vendure tests: 127.0.0.1:$PORT, SQLite in memory (sql.js,
// no compiler needed), a superadmin from env vars, bearer tokens for API clients. Seeded with the minimum
// a sellable variant needs (a zone, a country, a tax rate); cx_pipeline/simulator/vendure_shop.py adds the rest.
const { bootstrap, DefaultLogger, LogLevel } = require('@vendure/core');
const { populate } = require('@vendure/core/cli');

const port = Number(process.env.PORT || 3000);
const config = {
    apiOptions: { hostname: '127.0.0.1', port, adminApiPath: 'admin-api', shopApiPath: 'shop-api' },
    authOptions: {
        tokenMethod: ['bearer'],
        superadminCredentials: {
            identifier: process.env.VENDURE_ADMIN || 'superadmin',
            password: process.env.VENDURE_PASSWORD || 'superadmin',
        },
        cookieOptions: { secret: 'cx-pipeline-test' },
    },
    dbConnectionOptions: { type: 'sqljs', synchronize: true, logging: false },
    paymentOptions: { paymentMethodHandlers: [] },
    logger: new DefaultLogger({ level: LogLevel.Error }),
    plugins: [],
};
const initialData = {
    defaultLanguage: 'en',
    defaultZone: 'Europe',
    taxRates: [{ name: 'Standard Tax', percentage: 20 }],
    shippingMethods: [],
    paymentMethods: [],
    countries: [{ name: 'Germany', code: 'DE', zone: 'Europe' }],
    collections: [],
};

populate(() => bootstrap(config), initialData)
    .then(() => console.log(`VENDURE READY on ${port}`))
    .catch(err => {
        console.error(err);
        process.exit(1);
    });
